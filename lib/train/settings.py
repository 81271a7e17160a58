"""The settings tree: one typed, validated Settings object per run, composed of each component's own
settings.

Each component declares its settings beside its code (lib/optim, lib/pruning, lib/adamwprune,
lib/runtime, lib/measure, lib/convert, lib/study, lib/classify); this module declares the
trainer's own (what it trains on, how long and how fast) and the model's and the sample's (the
model's code is gpt2/model.py, above lib, which builds its GPTConfig from ModelSettings), and
composes them all in `Settings`, which the Trainer consumes. Each field names its Kconfig symbol
(and CLI flag, if any) in its metadata: one symbol <-> one field <-> one place that uses it.
Values are checked once, in __post_init__; errors name the field, the value seen, what is allowed
and the symbol or flag that sets it. lib/config/load.py reads config.py into this tree; nothing
else reads config.py.
"""

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lib.adamwprune import AdamWPruneSettings, bitter2_overrides, bitter2_unscaled
from lib.classify.settings import ClassifySettings
from lib.convert.settings import LoraSettings
from lib.fields import SettingsError, check, kc
from lib.measure.settings import DownstreamSettings, InferenceSettings, MonitorSettings
from lib.measure.tracking import TrackingSettings
from lib.optim import OptimizerSettings
from lib.pruning import PAIRINGS, PruningSettings
from lib.runtime.settings import RuntimeSettings
from lib.study.settings import MatrixSettings

MODEL_NAMES = ("gpt2-tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
DATASETS = ("shakespeare", "linuxdoc", "finewebedu", "openwebtext", "tinystories", "custom", "classify")
"""classify: one class of the prepared labelled corpus (data.classify_label), set per run by the matrix."""
# Corpora tokenized up to GPT2_DATASET_MAX_TOKENS (the others are small and taken whole).
CAPPED_DATASETS = ("finewebedu", "openwebtext", "tinystories", "custom")
DTYPES = {"bf16": (True, "bfloat16"), "fp16": (True, "float16"), "fp32": (False, "bfloat16")}


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSettings:
    """The network's shape (gpt2/model.py)."""

    name: str = field(default="gpt2-tiny", metadata=kc("GPT2_MODEL_NAME", "--model"))
    """One of MODEL_NAMES."""
    block_size: int = field(default=1024, metadata=kc("GPT2_BLOCK_SIZE", "--block-size"))
    """Tokens per sequence."""
    init_from: str = field(default="", metadata=kc("GPT2_INIT_FROM", "--init-from"))
    """An HF GPT-2 folder or hub name to start from (gpt2/hf.py); empty: random initialisation."""
    dropout: float = field(default=0.0, metadata=kc("GPT2_DROPOUT"))
    """Dropout on attention weights, residual branches and embeddings, in [0, 1)."""
    bias: bool = field(default=True, metadata=kc("GPT2_BIAS"))
    """Biases in every Linear layer and LayerNorm, as GPT-2 has them."""
    weight_tying: bool = field(default=True, metadata=kc("GPT2_WEIGHT_TYING"))
    """One matrix for the token embedding and the output head."""
    flash_attention: bool = field(default=True, metadata=kc("GPT2_FLASH_ATTENTION"))
    """PyTorch's fused attention kernels; N takes the explicit softmax(QK^T)V path."""
    pad_vocab: bool = field(default=True, metadata=kc("GPT2_PAD_VOCAB"))
    """Pad the vocabulary from 50257 to 50304 rows (never sampled) for faster matrix multiplies."""
    activation_checkpointing: bool = field(
        default=False,
        metadata=kc("GPT2_ACTIVATION_CHECKPOINTING", "--activation-checkpointing", resumable=True),
    )
    """Keep each block's input only and recompute the rest in backward."""
    fused_loss: bool = field(default=False, metadata=kc("GPT2_FUSED_LOSS", "--fused-loss", resumable=True))
    """The output head and loss chunk by chunk, so the full logits never exist."""
    ra_mla: bool = field(default=False, metadata=kc("ENABLE_RA_MLA", "--ra-mla"))
    """Multi-head latent attention with reciprocal attention (gpt2/model.py: LatentAttention)."""
    ra_mla_latent_dim: int = field(default=128, metadata=kc("RA_MLA_LATENT_DIM"))
    """Width of RA+MLA's shared key/value latent (and the query latent): what a cache keeps."""
    ra_mla_ra_alpha: float = field(default=0.0, metadata=kc("RA_MLA_RA_ALPHA", "--ra-alpha"))
    """Weight of the reciprocal score inside the window, in [0, 1]; 0 is pure MLA."""
    ra_mla_ra_window: int = field(default=64, metadata=kc("RA_MLA_RA_WINDOW"))
    """Pairs at most this far apart mix their scores with their reciprocals."""
    ra_mla_per_head_q_latent: bool = field(default=True, metadata=kc("RA_MLA_PER_HEAD_Q_LATENT"))
    """Queries through a latent of their own, up-projected per head (else full rank)."""
    ra_mla_per_head_v_up: bool = field(default=True, metadata=kc("RA_MLA_PER_HEAD_V_UP"))
    """Each head its own value up-projection (else one shared by all heads)."""

    def __post_init__(self) -> None:
        check(self, "name", self.name in MODEL_NAMES, f"one of {', '.join(MODEL_NAMES)}")
        check(self, "ra_mla_latent_dim", 1 <= self.ra_mla_latent_dim <= 8192, "1..8192")
        check(self, "ra_mla_ra_alpha", 0.0 <= self.ra_mla_ra_alpha <= 1.0, "a number in [0, 1]")
        check(self, "ra_mla_ra_window", 1 <= self.ra_mla_ra_window <= 8192, "1..8192")
        if self.ra_mla:
            check(
                self,
                "init_from",
                not self.init_from,
                "empty with ENABLE_RA_MLA (GPT-2 weights have no latent)",
            )
        check(self, "block_size", 8 <= self.block_size <= 8192, "8..8192")
        check(self, "dropout", 0.0 <= self.dropout < 1.0, "a number in [0, 1)")


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerationSettings:
    """The sample printed after training."""

    max_tokens: int = field(default=100, metadata=kc("GPT2_GENERATION_MAX_TOKENS", resumable=True))
    """Tokens sampled from the final model into sample.txt; 0: no sample."""
    temperature: float = field(default=0.8, metadata=kc("GPT2_GENERATION_TEMPERATURE", resumable=True))
    """Divides the logits before sampling, in (0, 10]."""
    top_k: int = field(default=200, metadata=kc("GPT2_GENERATION_TOP_K", resumable=True))
    """Sample among the k most likely tokens; 0: among all."""
    prompt: str = field(default="", metadata=kc("GPT2_GENERATION_PROMPT", resumable=True))
    """Text the sample starts from; empty: the end-of-text token."""

    def __post_init__(self) -> None:
        check(self, "max_tokens", 0 <= self.max_tokens <= 4096, "0..4096")
        check(self, "temperature", 0.0 < self.temperature <= 10.0, "a number in (0, 10]")
        check(self, "top_k", self.top_k >= 0, "0 (all tokens) or more")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSettings:
    """Which token files to train on (gpt2/prepare_data.py makes them)."""

    dataset: str = field(default="shakespeare", metadata=kc("GPT2_DATASET_NAME", "--dataset"))
    """One of DATASETS."""
    custom_path: str = field(default="", metadata=kc("GPT2_CUSTOM_DATASET_PATH", "--custom-path"))
    """The custom corpus (a file or folder) to prepare; training from prepared tokens needs none."""
    max_tokens_millions: int = field(default=1000, metadata=kc("GPT2_DATASET_MAX_TOKENS"))
    """Token cap for streamed corpora, in millions."""
    val_fraction: float = field(default=0.1, metadata=kc("GPT2_VAL_FRACTION"))
    """The last part of the token stream that becomes val.bin, in (0, 0.5]."""
    data_dir: str = field(default="data", metadata=kc("DATA_DIR", "--data-dir", resumable=True))
    """Token files live in <data_dir>/<dataset>/ (train.bin, val.bin, meta.json)."""
    classify_label: str = field(default="", metadata=kc("CLASSIFY_LABEL", "--classify-label"))
    """With dataset classify: the class (its folder name) whose training documents the run learns."""

    def __post_init__(self) -> None:
        check(self, "dataset", self.dataset in DATASETS, f"one of {', '.join(DATASETS)}")
        if self.dataset == "classify":
            check(
                self,
                "classify_label",
                re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.classify_label) is not None,
                "a class folder of the prepared corpus (lowercase letters, digits, '-')",
            )
        check(self, "max_tokens_millions", self.max_tokens_millions >= 1, "1 or more")
        check(self, "val_fraction", 0.0 < self.val_fraction <= 0.5, "a number in (0, 0.5]")
        check(self, "data_dir", self.data_dir != "", "a non-empty path")

    @property
    def token_dir(self) -> Path:
        """Folder of train.bin / val.bin / meta.json (a class's, inside the labelled corpus's)."""
        if self.dataset == "classify":
            return Path(self.data_dir) / "classify" / self.classify_label
        return Path(self.data_dir) / self.dataset

    @property
    def token_cap(self) -> int | None:
        """Tokens at most, for a capped corpus; None for one taken whole."""
        return self.max_tokens_millions * 1_000_000 if self.dataset in CAPPED_DATASETS else None

    def token_check(self) -> dict:
        """What prepared token files must agree with (lib/train/data.py: stale_reason)."""
        return {"custom_path": self.custom_path, "val_fraction": self.val_fraction, "cap": self.token_cap}


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingSettings:
    """Batching, length, learning-rate schedule, evaluation and checkpoints."""

    batch_mode: str = field(default="manual", metadata=kc("GPT2_BATCH_MODE", "--batch-mode"))
    """manual, or auto: batch_size and gradient_accumulation found for target_batch (gpt2/batch.py)."""
    target_batch: int = field(default=128, metadata=kc("GPT2_TARGET_BATCH", "--target-batch"))
    """Sequences per optimizer step in auto mode."""
    batch_size: int = field(default=12, metadata=kc("BATCH_SIZE", "--batch-size"))
    """Sequences per micro-batch, per device."""
    gradient_accumulation: int = field(
        default=1, metadata=kc("GPT2_GRADIENT_ACCUMULATION", "--gradient-accumulation")
    )
    """Micro-batches whose gradients are summed per optimizer step (shared out over the processes)."""
    max_iters: int = field(default=10000, metadata=kc("GPT2_MAX_ITERS", "--max-iters", resumable=True))
    """Optimizer steps; 0 leaves the length to num_epochs."""
    num_epochs: int = field(default=0, metadata=kc("NUM_EPOCHS", "--num-epochs", resumable=True))
    """Run length in passes over the training tokens; with max_iters too, the first reached ends it."""
    max_time_seconds: int = field(default=0, metadata=kc("GPT2_MAX_TIME", "--max-time", resumable=True))
    """Training-time budget in seconds, as the seed project's GPT2_MAX_TIME; 0: none."""
    learning_rate: float = field(default=6e-4, metadata=kc("LEARNING_RATE", "--learning-rate"))
    """The peak learning rate, reached at the end of the warm-up."""
    lr_warmup_steps: int = field(
        default=2000, metadata=kc("GPT2_WARMUP_STEPS", "--lr-warmup-steps", aliases=("--warmup-steps",))
    )
    """Steps of the learning rate's linear warm-up (lib/train/lr_schedule.py)."""
    decay_lr: bool = field(default=True, metadata=kc("GPT2_DECAY_LR"))
    """Decay the learning rate along a cosine to min_lr after the warm-up."""
    min_lr: float = field(default=6e-5, metadata=kc("GPT2_MIN_LR", "--min-lr"))
    """The learning rate's floor at the end of the decay."""
    grad_clip: float = field(default=1.0, metadata=kc("GPT2_GRAD_CLIP"))
    """Global gradient-norm bound; 0 turns clipping off."""
    eval_interval: int = field(
        default=500, metadata=kc("GPT2_EVAL_INTERVAL", "--eval-interval", resumable=True)
    )
    """Optimizer steps between evaluations (and checkpoints)."""
    eval_samples: int = field(default=200, metadata=kc("GPT2_EVAL_SAMPLES", "--eval-samples"))
    """Micro-batches averaged per loss estimate."""
    log_interval: int = field(default=10, metadata=kc("GPT2_LOG_INTERVAL", "--log-interval", resumable=True))
    """Optimizer steps between logged steps (each one synchronises the device)."""
    save_checkpoint: bool = field(default=True, metadata=kc("GPT2_SAVE_CHECKPOINT", resumable=True))
    """Write ckpt.pt at each evaluation and at the end, and best.pt, so a run can resume."""
    final_optimizer: bool = field(
        default=True, metadata=kc("GPT2_CHECKPOINT_FINAL_OPTIMIZER", resumable=True)
    )
    """Whether a finished run's last ckpt.pt keeps the optimizer's state (needed only to train it
    further); n keeps the weights, masks and records at a third of the size (124M: 0.5 GB, not 1.5)."""

    def __post_init__(self) -> None:
        check(self, "batch_mode", self.batch_mode in ("manual", "auto"), "manual or auto")
        check(self, "target_batch", self.target_batch >= 1, "1 or more")
        check(self, "batch_size", self.batch_size >= 1, "1 or more")
        check(self, "gradient_accumulation", self.gradient_accumulation >= 1, "1 or more")
        check(self, "max_iters", self.max_iters >= 0, "0 or more")
        check(self, "num_epochs", self.num_epochs >= 0, "0 or more")
        check(
            self,
            "max_iters",
            self.max_iters > 0 or self.num_epochs > 0,
            "more than 0 unless NUM_EPOCHS (--num-epochs) sets the length",
        )
        check(self, "max_time_seconds", self.max_time_seconds >= 0, "0 (no limit) or a number of seconds")
        check(self, "learning_rate", 0.0 < self.learning_rate < 1.0, "a number in (0, 1)")
        check(self, "lr_warmup_steps", self.lr_warmup_steps >= 0, "0 or more")
        check(
            self,
            "min_lr",
            0.0 <= self.min_lr <= self.learning_rate,
            f"a number in [0, LEARNING_RATE = {self.learning_rate:g}]",
        )
        check(self, "grad_clip", self.grad_clip >= 0.0, "0 (off) or a positive number")
        check(self, "eval_interval", self.eval_interval >= 1, "1 or more")
        check(self, "eval_samples", self.eval_samples >= 1, "1 or more")
        check(self, "log_interval", self.log_interval >= 1, "1 or more")


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything one training run needs, validated."""

    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    pruning: PruningSettings = field(default_factory=PruningSettings)
    adamwprune: AdamWPruneSettings = field(default_factory=AdamWPruneSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    downstream: DownstreamSettings = field(default_factory=DownstreamSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    matrix: MatrixSettings = field(default_factory=MatrixSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)

    def __post_init__(self) -> None:
        method, optimizer = self.pruning.method, self.optimizer.name
        if optimizer not in PAIRINGS[method]:
            allowed = " or ".join(PAIRINGS[method])
            hint = (
                "adamwprune prunes by its own states: use --pruning-method state"
                if optimizer == "adamwprune"
                else f"use --optimizer {allowed}"
            )
            raise SettingsError(
                f"pruning method {method!r} does not pair with optimizer {optimizer!r}: {method} "
                f"works with {allowed} ({hint}; CONFIG_PRUNING_METHOD and CONFIG_OPTIMIZER in "
                "make menuconfig)"
            )
        if self.lora.enabled and method in ("movement", "state"):
            raise SettingsError(
                f"GPT2_LORA (--lora) freezes the weights that {method} pruning scores by their gradients "
                "or optimizer moments; use --pruning-method magnitude (or none) with LoRA"
            )
        if self.lora.enabled and self.runtime.fp8:
            raise SettingsError("GPT2_LORA and GPT2_FP8 together are not supported; say N to one of them")
        if self.classify.enabled and not self.training.save_checkpoint:
            raise SettingsError(
                "CLASSIFY scores the test documents with each class model's final weights, which "
                "GPT2_SAVE_CHECKPOINT=n does not keep; say Y to GPT2_SAVE_CHECKPOINT"
            )
        accumulation, nproc = self.training.gradient_accumulation, self.runtime.nproc_per_node
        if self.training.batch_mode == "auto":
            if self.training.target_batch % nproc:
                raise SettingsError(
                    f"GPT2_TARGET_BATCH={self.training.target_batch} (--target-batch) does not divide over "
                    f"GPT2_NPROC_PER_NODE={nproc} processes; use a multiple of {nproc}"
                )
        elif accumulation % nproc:
            raise SettingsError(
                f"GPT2_GRADIENT_ACCUMULATION={accumulation} (--gradient-accumulation) does not divide "
                f"over GPT2_NPROC_PER_NODE={nproc} (--nproc-per-node) processes: each step's "
                f"micro-batches are shared out over them. Use a multiple of {nproc}."
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (JSON-ready) of every field."""
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, Any]) -> "Settings":
        """A copy with dotted-path overrides applied ({"training.batch_size": 8}), re-validated."""
        sections: dict[str, dict[str, Any]] = {}
        for path, value in overrides.items():
            section, _, name = path.partition(".")
            if section not in SECTIONS or name not in _field_map(SECTIONS[section]):
                raise SettingsError(f"unknown setting {path!r}")
            sections.setdefault(section, {})[name] = value
        return dataclasses.replace(
            self,
            **{s: dataclasses.replace(getattr(self, s), **kv) for s, kv in sections.items()},
        )


SECTIONS = {f.name: f.default_factory for f in fields(Settings)}
# The settings a resumed run may change (each field says so in its metadata: kc(..., resumable=True)).
RESUMABLE = frozenset(
    f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls) if f.metadata["resumable"]
)


def _field_map(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls)}


def settings_field(path: str) -> dataclasses.Field:
    """The dataclass field at a dotted settings path ("training.learning_rate"): its type, default
    and metadata (Kconfig symbol, CLI flag, resumable)."""
    section, _, name = path.partition(".")
    return _field_map(SECTIONS[section])[name]


def typed_value(value: Any, typ: Any, where: str) -> Any:
    """Turn a config.py value into the field's type; Kconfig floats arrive as strings."""
    if typ in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise SettingsError(f"{where} = {value!r} is not a number")
        try:
            out = float(value)
        except ValueError:
            raise SettingsError(f'{where} = "{value}" is not a number (write e.g. "6e-4")') from None
        if not math.isfinite(out):
            raise SettingsError(f'{where} = "{value}" is not a finite number')
        return out
    expected = {"int": int, "bool": bool, "str": str}.get(typ, typ)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        what = {int: "an integer", bool: "y or n (a bool)", str: "a string"}.get(expected, expected.__name__)
        raise SettingsError(f"{where} = {value!r} is not {what}")
    return value


def field_path(name: str) -> str | None:
    """The dotted settings path of a Kconfig symbol (LEARNING_RATE or CONFIG_LEARNING_RATE) or of a
    path itself (training.learning_rate, or an older version's path, MOVED_FIELDS), or None when
    neither names a settings field."""
    symbol = name.removeprefix("CONFIG_")
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.metadata["kconfig"] == symbol or f"{section}.{f.name}" == name:
                return f"{section}.{f.name}"
    section, _, old = name.partition(".")
    if (moved := MOVED_FIELDS.get((section, old))) is not None:  # a path of an older version
        return ".".join(moved)
    return None


def field_default(path: str) -> Any:
    """The default of the setting at a dotted path."""
    return settings_field(path).default


def symbol_of(path: str) -> str:
    """The Kconfig symbol of a dotted settings path ("training.learning_rate" -> "LEARNING_RATE")."""
    return settings_field(path).metadata["kconfig"]


def setting_path(name: str) -> str:
    """The dotted settings path ("training.learning_rate") of a Kconfig symbol or of a path itself.

    Accepts LEARNING_RATE, CONFIG_LEARNING_RATE or training.learning_rate; raises SettingsError
    naming close matches otherwise.
    """
    if (path := field_path(name)) is not None:
        return path
    symbol = name.removeprefix("CONFIG_")
    known = [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in fields(c)]
    known += [f.metadata["kconfig"] for c in SECTIONS.values() for f in fields(c)]
    close = difflib.get_close_matches(symbol, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise SettingsError(f"{name!r} is neither a Kconfig symbol nor a settings path{hint}")


def setting_value(path: str, value: Any) -> Any:
    """`value` (a TOML/JSON value, or text from the command line) as the field's type."""
    f = settings_field(path)
    where = f"{path} (CONFIG_{f.metadata['kconfig']})"
    if isinstance(value, str) and f.type in (int, "int", bool, "bool"):
        text = value.strip().lower()
        if f.type in (bool, "bool"):
            if text not in ("y", "n", "true", "false", "1", "0"):
                raise SettingsError(f"{where} = {value!r} is not a bool (y/n)")
            return text in ("y", "true", "1")
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{where} = {value!r} is not an int") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and f.type in (float, "float"):
        value = float(value)
    return typed_value(value, f.type, where)


def settings_from_dict(saved: Mapping[str, Any]) -> Settings:
    """Settings from a Settings.to_dict() result of any version (a run's settings.json), validated:
    moved fields in their new places, fields added since at their defaults, fields since removed
    dropped (nothing reads them)."""
    values = upgrade_settings_dict(saved)
    return Settings(
        **{
            section: cls(**{k: v for k, v in values[section].items() if k in _field_map(cls)})
            for section, cls in SECTIONS.items()
        }
    )


# Fields that moved between sections, so a settings.json written before the move (a run to resume,
# a kept record) reads as today's: (old section, name) -> (new section, name).
MOVED_FIELDS = {
    ("optimizer", "adamwprune_variant"): ("adamwprune", "variant"),
    ("optimizer", "bitter2_scaling"): ("adamwprune", "bitter2_scaling"),
    ("pruning", "adamwprune_variant"): ("adamwprune", "variant"),
    ("pruning", "bitter2_scaling"): ("adamwprune", "bitter2_scaling"),
    ("optimizer", "adamwprune_base"): ("adamwprune", "base"),
    ("training", "warmup_steps"): ("training", "lr_warmup_steps"),
    ("pruning", "warmup_steps"): ("pruning", "pruning_warmup"),
}


def upgrade_settings_dict(saved: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A Settings.to_dict() result of any version, with MOVED_FIELDS in today's places and the
    fields added since (a whole section, such as the classifier's) at their defaults: what a run
    recorded before a setting existed behaved as its default."""
    out = {section: dict(values) for section, values in saved.items()}
    for (old, name), (new, new_name) in MOVED_FIELDS.items():
        if name in out.get(old, {}):
            out.setdefault(new, {}).setdefault(new_name, out[old].pop(name))
    for section, cls in SECTIONS.items():
        values = out.setdefault(section, {})
        for f in fields(cls):
            if f.name not in values and f.default is not dataclasses.MISSING:
                values[f.name] = f.default
    return out


def settle(
    settings: Settings, overrides: Mapping[str, Any] | None = None, settled: bool = False
) -> tuple[Settings, dict | None]:
    """A run's settings: `overrides` applied, then what its AdamWPrune variant scales (bitter2 spends
    what state pruning saves: more steps or a larger batch), exactly once; and a record of that
    scaling for the summary (None when nothing was scaled). Every entry point that turns
    settings into a run (gpt2/train.py, the matrix runner's config.txt) settles them here.
    `settled`: `settings` are a run's own, already scaled (a resume): the scaling is undone first,
    so the run keeps its value, and a flag given now is scaled as a new run's would be."""
    if settled:
        settings = settings.replace(bitter2_unscaled(settings))
    s = settings.replace(overrides) if overrides else settings
    scale, record = bitter2_overrides(s)
    return s.replace(scale), record
