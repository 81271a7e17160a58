"""AdamWPrune in one place: its base optimizer, its variants, bitter2's scaling, its naming.

AdamWPrune (the seed project's optimizer) is a base optimizer, AdamW or AdamWSPAM, whose own
moments score the weights for state pruning, so pruning keeps no state of its own. Its variants
are the seeds' "bitter lesson" scores; bitter2 scores as bitter1 and spends what pruning saves on
more steps or a larger batch. Everything that knows this lives here:

    lib/adamwprune/__init__.py   the settings (plain data: no torch), the names a run goes by
                                 (RunIdentity), bitter2's scaling
    lib/adamwprune/variants.py   each variant's score
    lib/adamwprune/build.py      every run's optimizer and pruner (AdamWPrune's resolved here;
                                 the others built by lib/optim and lib/pruning)
    lib/adamwprune/Kconfig       its menu: base, variant, bitter2's scaling, the matrix's variants

The optimizer choice (OPTIMIZER = adamwprune) and the method choice (PRUNING_METHOD = state)
stay in their own menus: AdamWPrune is one of each, and always the two together.
"""

from dataclasses import dataclass, field

from lib.adamwprune.variants import VARIANTS
from lib.fields import SettingsError, check, kc

# The optimizers AdamWPrune may be built on (ADAMWPRUNE_BASE_ADAMW / _ADAMWSPAM, as in the seeds).
BASES = ("adamw", "adamwspam")
# How a base other than AdamW shows in run names (gpt2_adamwprune-spam_bitter1_state_50).
BASE_TAGS = {"adamwspam": "spam"}
# bitter2 spends what state pruning saves: (settings path scaled, factor), the seeds' factors.
BITTER2_SCALINGS: dict[str, tuple[str, float]] = {
    "iterations": ("training.max_iters", 1.21),
    "batch": ("training.batch_size", 1.14),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class AdamWPruneSettings:
    """AdamWPrune's own settings; they apply only to runs with OPTIMIZER = adamwprune."""

    base: str = field(default="adamw", metadata=kc("ADAMWPRUNE_BASE_OPTIMIZER_NAME", "--adamwprune-base"))
    """The optimizer it is built on, whose moments it scores: one of BASES."""
    variant: str = field(default="bitter0", metadata=kc("GPT2_ADAMWPRUNE_VARIANT", "--adamwprune-variant"))
    """How it scores the weights: a key of lib/adamwprune/variants.VARIANTS."""
    bitter2_scaling: str = field(default="iterations", metadata=kc("ADAMWPRUNE_BITTER2_SCALING"))
    """How bitter2 spends what state pruning saves: a key of BITTER2_SCALINGS (applied once, by
    lib/train/settings.settle)."""

    def __post_init__(self) -> None:
        check(self, "base", self.base in BASES, f"one of {', '.join(BASES)}")
        check(self, "variant", self.variant in VARIANTS, f"one of {', '.join(VARIANTS)}")
        check(
            self,
            "bitter2_scaling",
            self.bitter2_scaling in BITTER2_SCALINGS,
            f"one of {', '.join(BITTER2_SCALINGS)}",
        )


def optimizer_label(name: str, base: str) -> str:
    """The optimizer as names and reports show it: adamwprune on the SPAM base is adamwprune-spam,
    so two bases never share a run name."""
    if name == "adamwprune" and base != "adamw":
        return f"adamwprune-{BASE_TAGS[base]}"
    return name


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What a run is, as its name, its summary and the matrix tell it: the variant and base only
    for AdamWPrune, the sparsity only for a pruned run (None otherwise)."""

    optimizer: str
    method: str
    variant: str | None
    base: str | None
    sparsity: float | None

    @property
    def label(self) -> str:
        """The optimizer as shown: adamwprune-spam for AdamWPrune on the SPAM base."""
        return optimizer_label(self.optimizer, self.base or "adamw")

    def name(self, seed: int | None = None, tag: str = "") -> str:
        """gpt2_<optimizer>[_<variant>]_<pruning>[_<sparsity%>][_<tag>][_s<seed>], as the seed
        project named its runs."""
        parts = ["gpt2", self.label, *([self.variant] if self.variant else []), self.method]
        if self.sparsity is not None:
            parts.append(str(round(100 * self.sparsity)))
        if tag:
            parts.append(tag)
        if seed is not None:
            parts.append(f"s{seed}")
        return "_".join(parts)


def run_identity(
    optimizer: str, method: str, sparsity: float | None, variant: str | None, base: str
) -> RunIdentity:
    """A combination's identity: AdamWPrune's variant and base kept only for AdamWPrune, the
    sparsity only with a pruning method."""
    own = optimizer == "adamwprune"
    return RunIdentity(
        optimizer,
        method,
        variant if own else None,
        base if own else None,
        sparsity if method != "none" else None,
    )


def identity_of(settings) -> RunIdentity:
    """The identity of a run's settings (lib/train/settings.Settings)."""
    p, a = settings.pruning, settings.adamwprune
    return run_identity(settings.optimizer.name, p.method, p.target_sparsity, a.variant, a.base)


def bitter2_overrides(settings) -> tuple[dict, dict | None]:
    """The settings overrides bitter2 applies, and a record of them for the summary.

    Runs with another optimizer or variant get none. The factors are the seed
    project's: 21% more iterations (10000 -> 12100) or a 14% larger batch.
    """
    a = settings.adamwprune
    if settings.optimizer.name != "adamwprune" or not VARIANTS[a.variant].scaled:
        return {}, None
    path, factor = BITTER2_SCALINGS[a.bitter2_scaling]
    if path == "training.batch_size" and settings.training.batch_mode == "auto":
        path = "training.target_batch"  # the micro-batch is chosen; scale what the user set
    section, name = path.split(".")
    before = getattr(getattr(settings, section), name)
    if before == 0:
        raise SettingsError(
            "bitter2's iteration scaling needs GPT2_MAX_ITERS > 0 (it scales the step count); "
            "set it, or choose the batch scaling (ADAMWPRUNE_BITTER2_SCALING)"
        )
    after = round(before * factor)
    return {path: after}, {"setting": path, "factor": factor, "from": before, "to": after}


def bitter2_unscaled(settings) -> dict:
    """The override that undoes bitter2_overrides on settings it produced (a run's saved settings).
    Exact for factors above 1: the scaled value is round(x * factor), off x * factor by at most 0.5,
    so dividing by the factor lands within 0.5 / factor of x."""
    _, record = bitter2_overrides(settings)
    return {} if record is None else {record["setting"]: round(record["from"] / record["factor"])}
