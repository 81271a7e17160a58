"""Migrate a seed-project defconfig to ours: every line mapped, converted, or dropped with its reason.

The seed project (the research code this one re-imagines) wrote defconfigs that our strict
loader refuses for good reasons: symbols of features not built here, derived mirrors, seed-only
spellings, `# comments` after values. `migrate()` reads one such file and returns our defconfig:
symbols we share are kept, seed spellings renamed (COMPILE_MODEL -> GPT2_COMPILE), values
converted where units or spellings differ (DTYPE="float32" -> MIXED_PRECISION=n), agreeing
duplicates merged, conflicting ones refused, and every other line listed as dropped with the
reason. The result is then loaded strictly; what does not apply in it (an unmet dependency) is
dropped too, with kconfiglib's reason. scripts/migrate_defconfig.py is the command line.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import kconfiglib

from lib.config.kconfig import Assignment, DefconfigError, apply_config, load_kconfig
from lib.errors import Refusal

_LINE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^#\s*CONFIG_([A-Za-z0-9_]+) is not set")
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')
# The seed project's other model families: their symbols mean nothing to a GPT-2 trainer.
_OTHER_FAMILY = re.compile(
    r"^(TEST_)?MODELS?(_MODE)?(_SELECT|_ENABLE)?_(LENET5?|RESNET\d*)$|^(LENET5?|RESNET\d*)_|^TEST_MODELS$"
)

# Seed spellings of our symbols, same meaning and unit.
RENAMED = {
    "COMPILE_MODEL": "GPT2_COMPILE",
    "GPT2_DATASET": "GPT2_DATASET_NAME",
    "MAX_ITERS": "GPT2_MAX_ITERS",
    "LOG_INTERVAL": "GPT2_LOG_INTERVAL",
    "SAVE_CHECKPOINT": "GPT2_SAVE_CHECKPOINT",
    "GRADIENT_CLIP_NORM": "GPT2_GRAD_CLIP",
    "WEIGHT_DECAY": "ADAMW_WEIGHT_DECAY",
    "PARALLEL_JOBS": "TEST_MATRIX_PARALLEL",
    # AdamWPrune's own schedule and Adam settings: here one schedule and one set of Adam settings
    # serve every method and optimizer, so runs differ only in what is compared.
    "ADAMWPRUNE_WARMUP_STEPS": "PRUNING_WARMUP",
    "ADAMWPRUNE_FREQUENCY": "PRUNING_FREQUENCY",
    "ADAMWPRUNE_RAMP_END_STEP": "PRUNING_RAMP_END",
    "ADAMWPRUNE_BETA1": "ADAMW_BETA1",
    "ADAMWPRUNE_BETA2": "ADAMW_BETA2",
    "ADAMWPRUNE_WEIGHT_DECAY": "ADAMW_WEIGHT_DECAY",
    "ADAMWPRUNE_TARGET_SPARSITY": "TARGET_SPARSITY",
    # The seed project's test-matrix mirrors of the selections.
    **{f"TEST_OPTIMIZER_ENABLED_{o}": f"OPTIMIZER_ENABLE_{o}" for o in ("ADAMW", "ADAMWSPAM", "ADAMWPRUNE")},
    **{f"TEST_PRUNING_{m}": f"PRUNING_ENABLE_{m}" for m in ("NONE", "MAGNITUDE", "MOVEMENT", "STATE")},
    **{f"TEST_SPARSITY_{s}": f"SPARSITY_ENABLE_{s}" for s in (50, 70, 90, 95, 99)},
}

_GPT2_ONLY = "this project trains GPT-2 only (the seed project also trained CNNs)"
_NO_LOADER = "token files are memory-mapped here: no DataLoader workers to configure"
_NOT_BUILT = "not built here"
# Seed symbols with no counterpart: why each is dropped.
DROPPED = {
    "MODEL_MODE_SINGLE": _GPT2_ONLY,
    "MODEL_MODE_MULTIPLE": _GPT2_ONLY,
    "MODEL_SELECT_GPT2": _GPT2_ONLY,
    "MODEL_GPT2": _GPT2_ONLY,
    "MODEL": _GPT2_ONLY,
    "NUM_WORKERS": _NO_LOADER,
    "PIN_MEMORY": "tokens are copied from pinned memory on CUDA already",
    "PERSISTENT_WORKERS": _NO_LOADER,
    "PREFETCH_FACTOR": _NO_LOADER,
    "GPU_WARMUP": "no separate GPU warm-up: compilation happens in the first steps, left out of the throughput",
    "CHECKPOINT_INTERVAL": "a checkpoint is written at every evaluation (GPT2_EVAL_INTERVAL)",
    "GPT2_CUDNN_BENCHMARK": "cuDNN autotuning is not a setting here (attention uses GPT2_ATTENTION_BACKEND)",
    "AUTO_GENERATE_GRAPHS": "the matrix report always draws its plots",
    "VERBOSE": "logging is fixed: rank 0 logs at INFO to stdout and output.log",
    "LOG_LEVEL": "logging is fixed: rank 0 logs at INFO to stdout and output.log",
    "DEBUG": "no debug mode here",
    "PROFILE": "profiling is `make bench BENCH_ARGS=--profile DIR`",
    "JSON_OUTPUT": "metrics go to metrics.jsonl and summary.json in each run folder",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable segments are the default here (export PYTORCH_CUDA_ALLOC_CONF to change)",
    "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": "a ROCm environment variable: export it in the shell",
    "ADAMWPRUNE_ENABLE_PRUNING": "implied: AdamWPrune always prunes by its states (the state method)",
    "ADAMWPRUNE_AMSGRAD": "AMSGrad is not offered: every optimizer here is AdamW without it, for like-for-like runs",
    "ADAMWPRUNE_RAMP_END_EPOCH": "a ramp end in epochs: set PRUNING_RAMP_END in optimizer steps (0: 75% of the run)",
    "PRUNING_RAMP_END_EPOCH": "a ramp end in epochs: set PRUNING_RAMP_END in optimizer steps (0: 75% of the run)",
    "PRUNING_ENABLE_MOMENTUM": "momentum pruning is "
    + _NOT_BUILT
    + "; the nearest is movement (PRUNING_ENABLE_MOVEMENT)",
    "PRUNING_SELECT_MOMENTUM": "momentum pruning is "
    + _NOT_BUILT
    + "; the nearest is movement (PRUNING_SELECT_MOVEMENT)",
    "TEST_PRUNING_MOMENTUM": "momentum pruning is " + _NOT_BUILT,
    "MOMENTUM_PRUNING_ALPHA": "momentum pruning is " + _NOT_BUILT,
    "STATE_PRUNING_STRATEGY": "the hybrid state score is AdamWPrune bitter0 (GPT2_ADAMWPRUNE_VARIANT_BITTER0)",
    "STATE_PRUNING_MOMENTUM_WEIGHT": "bitter0's hybrid score has no weight to set",
    "PRUNING_LOG_SPARSITY": "sparsity is measured and logged at every evaluation",
    "RA_MLA_USE_FLASH": "RA+MLA's attention kernel is not a setting here",
    "RA_MLA_LOG_METRICS": "RA+MLA's sizes are always recorded in summary.json",
    "RA_MLA_CACHE_Q_WINDOW": "RA+MLA's query-window cache is not a setting here",
    "RA_MLA_USE_ROPE": "RA+MLA here has no rotary embedding (as =n asks)",
    **{
        f"OPTIMIZER_{k}_{o}": f"{o.lower()} is {_NOT_BUILT} (adamw, adamwspam, adamwprune are)"
        for k in ("ENABLE", "SELECT")
        for o in ("SGD", "ADAM", "ADAMWADV", "SINKGD")
    },
    **{f"TEST_OPTIMIZER_ENABLED_{o}": f"{o.lower()} is {_NOT_BUILT}" for o in ("SGD", "ADAM", "ADAMWADV")},
    "ADAMWPRUNE_BASE_ADAM": "AdamWPrune's bases here are adamw and adamwspam",
    "ADAMWPRUNE_BASE_ADAMWADV": "AdamWPrune's bases here are adamw and adamwspam",
}

# The matrix selections, (mode, prefix, members): a seed defconfig named only what it wanted,
# while some of ours default on.
GROUPS = [
    ("OPTIMIZER_MODE_MULTIPLE", "OPTIMIZER_ENABLE_", ("ADAMW", "ADAMWSPAM", "ADAMWPRUNE")),
    ("PRUNING_MODE_MULTIPLE", "PRUNING_ENABLE_", ("NONE", "MAGNITUDE", "MOVEMENT", "STATE")),
    ("PRUNING_MODE_MULTIPLE", "SPARSITY_ENABLE_", ("50", "70", "90", "95", "99")),
]
# The seed project's SPAM clipped from the first step and eased a reset in from 0.001 (its code);
# our defaults follow SPAM's published code there, so a migrated SPAM run pins the seed's behaviour.
SEED_SPAM = {"SPAM_CLIP_GRACE_STEPS": "0", "SPAM_WARMUP_START_FACTOR": '"0.001"'}


class MigrationError(Refusal, ValueError):
    """A seed defconfig that cannot be migrated (conflicting lines); the message lists them."""


def shown(line: Assignment) -> str:
    """A seed line as the report quotes it: its number and its assignment as written."""
    if line.raw == "# is not set":
        return f"line {line.lineno}: # CONFIG_{line.name} is not set"
    return f"line {line.lineno}: CONFIG_{line.name}={line.raw}"


@dataclass
class Migration:
    """Our defconfig lines, and what became of each seed line."""

    source: str
    title: str
    lines: dict[str, str] = field(default_factory=dict)
    """Our symbol -> value as written (n for '# CONFIG_X is not set')."""
    mapped: list[tuple[Assignment, str]] = field(default_factory=list)
    dropped: list[tuple[Assignment, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        """(seed lines that became lines of ours, seed lines dropped): together, every seed line."""
        mapped = {s.lineno for s, _ in self.mapped}
        return len(mapped), len({s.lineno for s, _ in self.dropped} - mapped)

    def text(self) -> str:
        """The migrated defconfig, with the dropped lines and their reasons as comments at the end."""
        mapped, dropped = self.counts()
        out = [
            f"# {self.title}" if self.title else f"# Migrated from {self.source}",
            f"# Migrated from the seed project's {Path(self.source).name}: {mapped} lines mapped, "
            f"{dropped} dropped (listed at the end). make menuconfig shows every option.",
        ]
        for name, value in self.lines.items():
            out.append(f"# CONFIG_{name} is not set" if value == "n" else f"CONFIG_{name}={value}")
        if self.notes:
            out += ["#", *[f"# Note: {n}" for n in self.notes]]
        if self.dropped:
            out += ["#", "# Dropped from the seed project's defconfig:"]
            out += [f"#   {shown(line)}  -- {why}" for line, why in self.dropped]
        return "\n".join(out) + "\n"

    def report(self) -> str:
        mapped, dropped = self.counts()
        lines = [f"{self.source}: {mapped} lines mapped, {dropped} dropped, {len(self.notes)} notes"]
        lines += [f"  mapped  {shown(seed)}  ->  {ours}" for seed, ours in self.mapped]
        lines += [f"  dropped {shown(seed)}  -- {why}" for seed, why in self.dropped]
        lines += [f"  note    {n}" for n in self.notes]
        return "\n".join(lines)


def read_seed_lines(path: Path) -> tuple[str, list[Assignment]]:
    """The file's first comment (its title) and its assignments.

    `raw` is the whole value as a Kconfig tool reads it (a trailing `# comment` included: Kconfig
    has no inline comments); `value` is the value with such a comment removed and quotes stripped,
    for the seed-only symbols whose meaning is converted here.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MigrationError(f"{path}: not UTF-8 text (byte {e.start}); is it a defconfig?") from None
    title, lines = "", []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if (m := _UNSET.match(s)) is not None:
            lines.append(Assignment(str(path), lineno, m[1], "# is not set", "n"))
        elif not s or s.startswith("#"):
            if not title and len(s) > 2 and "SPDX" not in s:
                title = s.lstrip("# ").strip()
        elif (m := _LINE.match(s)) is not None:
            quoted = _QUOTED.match(m[2])
            value = quoted[1] if quoted else m[2].split("#", 1)[0].strip()  # CONFIG_X=64  # a comment
            lines.append(Assignment(str(path), lineno, m[1], m[2].strip(), value))
        else:
            raise MigrationError(f"{path}:{lineno}: not a Kconfig assignment: {line!r}")
    if not lines:
        raise MigrationError(f"{path}: no CONFIG_ lines: nothing to migrate (is it a seed defconfig?)")
    return title, lines


def _type(sym: kconfiglib.Symbol) -> str:
    return {kconfiglib.INT: "an int", kconfiglib.HEX: "a hex", kconfiglib.STRING: "a string"}.get(
        sym.orig_type, "a bool"
    )


def _default_shown(sym: kconfiglib.Symbol) -> str:
    """Our default of `sym`, as a defconfig would write it."""
    if sym.orig_type is kconfiglib.BOOL:
        return kconfiglib.TRI_TO_STR[sym.tri_value]
    return f'"{sym.str_value}"' if sym.orig_type is kconfiglib.STRING else sym.str_value


def as_kconfig_reads(sym: kconfiglib.Symbol, seed: Assignment) -> tuple[str | None, str]:
    """What a Kconfig tool (Linux's conf, kconfiglib) makes of a seed line for our symbol `sym`.

    Returns (the value to write in our defconfig, "") when the tool applies the line, perhaps with
    a note on what it ignored, or (None, why) when it warns and ignores the line, so that the
    option keeps its default: then the seed project ran its own default here, and ours applies.
    """
    raw, t = seed.raw, sym.orig_type
    ignored = (
        f"a Kconfig tool warns about this line and ignores it, so the seed project ran its default "
        f"here (ours: CONFIG_{sym.name}={_default_shown(sym)})"
    )
    if raw == "# is not set":
        if t is kconfiglib.BOOL:
            return "n", ""
        return None, f"'is not set' is for bool options, and CONFIG_{sym.name} is {_type(sym)}: {ignored}"
    if t is kconfiglib.BOOL:
        if raw[:1] in ("y", "n"):  # the tools read the first character only
            rest = raw[1:].strip()
            return raw[
                0
            ], f"read as {raw[0]}: a Kconfig tool reads one character ({rest!r} ignored)" if rest else ""
        return None, f"{raw!r} is not y or n: {ignored}"
    if t is kconfiglib.STRING:
        quoted = _QUOTED.match(raw)
        if quoted is None:
            return None, f"{raw!r} is not a quoted string and CONFIG_{sym.name} is a string: {ignored}"
        rest = raw[quoted.end() :].strip()
        return quoted[0], f"a Kconfig tool reads the string and ignores {rest!r} after it" if rest else ""
    pattern = r"-?\d+" if t is kconfiglib.INT else r"(0[xX])?[0-9a-fA-F]+"
    if not re.fullmatch(pattern, raw):
        why = "with a trailing comment (Kconfig has none) " if "#" in raw else ""
        return None, f"{raw!r} {why}is not {_type(sym)} value: {ignored}"
    for low, high, cond in sym.ranges:
        if kconfiglib.expr_value(cond):
            base = 16 if t is kconfiglib.HEX else 10
            lo, hi, v = int(low.str_value, base), int(high.str_value, base), int(raw, base)
            if not lo <= v <= hi:
                return None, (
                    f"out of range (allowed {lo}..{hi} here); a Kconfig tool drops an out-of-range value "
                    f"for the default, as the seed project's CONFIG_BATCH_SIZE=16 ran as 32: the default "
                    f"applies (ours: CONFIG_{sym.name}={_default_shown(sym)})"
                )
            break
    return raw, ""


def _derived_entry(kconf: kconfiglib.Kconfig, name: str, value: str) -> str | None:
    """For a promptless string derived from a choice, the entry whose value it is (else None)."""
    sym = kconf.syms.get(name)
    if sym is None or any(n.prompt for n in sym.nodes) or sym.orig_type is not kconfiglib.STRING:
        return None
    unquoted = value.strip('"')
    for default, cond in sym.defaults:
        if isinstance(default, kconfiglib.Symbol) and default.str_value == unquoted:
            if isinstance(cond, kconfiglib.Symbol) and cond.choice is not None:
                return cond.name
    return None


def _converted(line: Assignment) -> list[tuple[str, str]] | None:
    """Lines of ours for a seed symbol whose value needs converting, or None if not such a symbol."""
    v = line.value
    if line.name == "DTYPE":
        return [("MIXED_PRECISION", "n")] if v == "float32" else [("GPT2_AMP_DTYPE", f'"{v}"')]
    if line.name == "TEST_ADAMWPRUNE_VARIANTS":
        return [(f"GPT2_ADAMWPRUNE_VARIANT_{x.strip().upper()}", "y") for x in v.split(",") if x.strip()]
    if line.name == "TRACKER" and "," in v:
        first = v.split(",")[0].strip()
        return [("ENABLE_TRACKIO" if first == "trackio" else "ENABLE_WANDB", "y")]
    return None


def migrate(path: str | Path, kconfig: str | Path = "Kconfig") -> Migration:
    """Our defconfig for the seed-project defconfig at `path` (MigrationError on conflicts)."""
    path = Path(path)
    title, seed_lines = read_seed_lines(path)
    kconf = load_kconfig(kconfig)
    m = Migration(str(path), title)
    origin: dict[str, Assignment] = {}
    conflicts: list[str] = []
    named: set[str] = set()  # the group prefixes a seed line named an entry of

    def put(seed: Assignment, name: str, value: str) -> None:
        named.update(prefix for _, prefix, _ in GROUPS if name.startswith(prefix) and value == "y")
        if name in m.lines and m.lines[name] != value:
            conflicts.append(
                f"{shown(seed)} sets CONFIG_{name}={value}, but {shown(origin[name])} set {m.lines[name]}"
            )
        elif name in m.lines:
            m.dropped.append((seed, f"agrees with {shown(origin[name])} (one setting here)"))
        else:
            m.lines[name], origin[name] = value, seed
            m.mapped.append(
                (seed, f"CONFIG_{name}={value}" if value != "n" else f"# CONFIG_{name} is not set")
            )

    for seed in seed_lines:
        name = RENAMED.get(seed.name, seed.name)
        sym = kconf.syms.get(name)
        ours = sym is not None and bool(sym.nodes)
        if seed.name in DROPPED:
            if seed.value == "y":  # a method of a matrix group that is not built here: still a choice made
                named.update(prefix for _, prefix, _ in GROUPS if seed.name.startswith(prefix))
            m.dropped.append((seed, DROPPED[seed.name]))
        elif _OTHER_FAMILY.match(seed.name):
            m.dropped.append((seed, f"{_GPT2_ONLY}: a LeNet-5 or ResNet setting"))
        elif (conv := _converted(seed)) is not None:
            for target, value in conv:
                put(seed, target, value)
            if seed.name == "TRACKER":
                m.notes.append(f"one tracker per run here: {shown(seed)} keeps its first")
        elif (entry := _derived_entry(kconf, name, seed.value)) is not None:
            put(seed, entry, "y")  # a derived mirror (GPT2_DATASET="finewebedu"): its choice entry
        elif ours and not any(n.prompt for n in sym.nodes):
            m.dropped.append((seed, "derived here from other options (it has no prompt)"))
        elif ours:
            value, why = as_kconfig_reads(sym, seed)
            if value is None:
                m.dropped.append((seed, why))
            elif sym.choice is not None and value == "n":
                m.dropped.append(
                    (seed, "a choice entry is not switched off on its own: the entry set y wins")
                )
            else:
                put(seed, name, value)
                if why:
                    m.notes.append(f"{shown(seed)}: {why}")
                if seed.name.startswith("ADAMWPRUNE_") and name.startswith("ADAMW_"):
                    m.notes.append(
                        f"{shown(seed)} sets CONFIG_{name}, the Adam setting of every optimizer here"
                    )
        else:
            m.dropped.append(
                (seed, "unknown here: neither one of our options nor a known seed-project symbol")
            )
    if conflicts:
        raise MigrationError(f"{path}: conflicting lines:\n  " + "\n  ".join(conflicts))

    # AdamWPrune always pruned by its states in the seed project: state pruning is implied.
    prunes = "y" in (m.lines.get("OPTIMIZER_ENABLE_ADAMWPRUNE"), m.lines.get("OPTIMIZER_SELECT_ADAMWPRUNE"))
    if prunes and m.lines.get("PRUNING_MODE_MULTIPLE") == "y" and m.lines.get("PRUNING_ENABLE_STATE") != "y":
        m.lines["PRUNING_ENABLE_STATE"] = "y"
        m.notes.append(
            "CONFIG_PRUNING_ENABLE_STATE=y added: the seed project's AdamWPrune always pruned by state"
        )
    # A matrix selection the seed file named is exactly what it named: ours defaults some entries on.
    for mode, prefix, members in GROUPS:
        if m.lines.get(mode) == "y" and prefix in named:
            off = [f"{prefix}{x}" for x in members if m.lines.get(f"{prefix}{x}") != "y"]
            m.lines.update({name: "n" for name in off if name not in m.lines})
            if off:
                m.notes.append(f"{', '.join(off)} off: the seed file enabled only its own")
    spam = "y" in (
        m.lines.get("OPTIMIZER_ENABLE_ADAMWSPAM"),
        m.lines.get("OPTIMIZER_SELECT_ADAMWSPAM"),
        m.lines.get("ADAMWPRUNE_BASE_ADAMWSPAM") if prunes else None,
    )
    if spam and ("ADAMW_BETA2" in m.lines or "ADAMW_BETA1" in m.lines):
        m.notes.append(
            "the seed project's AdamWSPAM ran betas (0.9, 0.999) with AMSGrad whatever its settings, and its "
            "resets never cleared AMSGrad's running maximum of v; here it takes ADAMW_BETA1/ADAMW_BETA2 like "
            "every optimizer, and no optimizer uses AMSGrad"
        )
    if m.lines.get("SPAM_ENABLE_CLIP", "y") == "y":
        added = {k: v for k, v in SEED_SPAM.items() if k not in m.lines}
        m.lines.update(added)
        if added:
            m.notes.append(
                ", ".join(f"CONFIG_{k}={v}" for k, v in added.items())
                + ": the seed project's SPAM (clipping from the first step, a reset eased in from 0.001)"
            )
    if spam:
        m.notes += _spam_in_effect(m, kconf)
    pruned = (
        m.lines.get("PRUNING_MODE_MULTIPLE") == "y" or m.lines.get("PRUNING_MODE_SINGLE") == "y" or prunes
    )
    if pruned and not any(k.startswith("PRUNING_RAMP_") and k != "PRUNING_RAMP_END" for k in m.lines):
        m.lines["PRUNING_RAMP_LINEAR"] = "y"
        m.notes.append(
            "CONFIG_PRUNING_RAMP_LINEAR=y: the seed project's magnitude pruner and AdamWPrune bitter0-2 ramped "
            "sparsity linearly (its p^3 ramp came later, with bitter3), so its bitter-lesson table was linear"
        )
    _drop_what_does_not_apply(m, kconf)
    return m


def _spam_in_effect(m: Migration, kconf: kconfiglib.Kconfig) -> list[str]:
    """Where a migrated SPAM value means something else in effect (the seed project's code)."""

    def value(name: str) -> str:
        return m.lines.get(name) or kconf.syms[name].str_value

    notes = []
    if value("SPAM_PERIODIC_RESET") != "n" and (interval := int(value("SPAM_INTERVAL"))) > 0:
        notes.append(
            f"CONFIG_SPAM_INTERVAL={interval} resets every {interval} optimizer steps here; the seed project's "
            f"SPAM advanced its step counter twice per iteration (its spike check and its reset each counted "
            f"one), so it reset every {interval // 2} iterations: set CONFIG_SPAM_INTERVAL={interval // 2} "
            "to repeat that"
        )
    if value("SPAM_WARMUP") != "n" and (steps := int(value("SPAM_WARMUP_STEPS"))) > 0:
        notes.append(
            f"CONFIG_SPAM_WARMUP_STEPS={steps}: the seed project's warm-up after a reset lasted {steps // 2} "
            "iterations (the same doubled counter) and scaled the learning rate, so the weight decay too, "
            f"from 0.001; here it eases the Adam update alone in over {steps} steps "
            f"(CONFIG_SPAM_WARMUP_STEPS={steps // 2} for the seed's length)"
        )
    notes.append(
        "the seed project clipped spikes before the global gradient-norm clip (GPT2_GRAD_CLIP) and tested "
        "for spikes on the norm after its own clip; here the global clip comes first and the spike test "
        "reads the norm before any clip"
    )
    return notes


def _drop_what_does_not_apply(m: Migration, kconf: kconfiglib.Kconfig) -> None:
    """Load the result strictly; lines with an unmet dependency are dropped with the loader's reason."""
    unmet_re = re.compile(
        r"CONFIG_([A-Za-z0-9_]+)=[^\n]*?: did not take effect \(applied: [^)]*\): "
        r"unmet dependency: it depends on (.+?), which is not met"
    )
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "defconfig"
        for _ in range(len(m.lines) + 1):
            candidate.write_text(m.text())
            try:
                apply_config(kconf, candidate)
                return
            except DefconfigError as e:
                unmet = unmet_re.findall(str(e))
                if not unmet:
                    raise MigrationError(f"{m.source}: the migrated lines do not load:\n{e}") from None
                for name, dependency in unmet:
                    m.lines.pop(name, None)
                    seed = next(
                        (
                            s
                            for s, o in m.mapped
                            if o.split("=")[0].endswith(f"CONFIG_{name}")
                            or o == f"# CONFIG_{name} is not set"
                        ),
                        None,
                    )
                    if seed is not None:
                        m.mapped = [(s, o) for s, o in m.mapped if s is not seed]
                        m.dropped.append((seed, f"does not apply here: it depends on {dependency}, not set"))
                    m.notes = [n for n in m.notes if f"CONFIG_{name}=" not in n]
    raise MigrationError(f"{m.source}: could not settle the migrated lines")
