"""Optimizers: a registry from the Kconfig choice name to a builder.

Every builder takes the model's parameter groups (decayed matrices, undecayed
vectors) and the OptimizerSettings, so runs that differ only in the optimizer
differ in nothing else. AdamWPrune is its base optimizer (AdamW or AdamWSPAM,
ADAMWPRUNE_BASES) whose states score the weights for state pruning
(lib/pruning/scores.py holds its variants).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from lib.optim.spam import AdamWSPAM, SpamConfig
from lib.pruning.scores import ADAMWPRUNE_VARIANTS, BITTER2_SCALINGS
from lib.validate import check, kc


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerSettings:
    """The optimizer and its hyper-parameters (the learning rate lives in TrainingSettings)."""

    name: str = field(default="adamwspam", metadata=kc("OPTIMIZER", "--optimizer"))
    """A key of OPTIMIZERS."""
    beta1: float = field(default=0.9, metadata=kc("ADAMW_BETA1"))
    beta2: float = field(default=0.95, metadata=kc("ADAMW_BETA2"))
    eps: float = field(default=1e-8, metadata=kc("ADAMW_EPSILON"))
    weight_decay: float = field(default=0.1, metadata=kc("ADAMW_WEIGHT_DECAY", "--weight-decay"))
    spam_clip: bool = field(default=True, metadata=kc("SPAM_ENABLE_CLIP"))
    spam_theta: float = field(default=50.0, metadata=kc("SPAM_THETA"))
    """An entry is clipped when g^2 > theta * v: the seeds' 50; the SPAM paper and code use 5000."""
    spam_clip_grace_steps: int = field(default=20, metadata=kc("SPAM_CLIP_GRACE_STEPS"))
    """No clipping in the first this many steps of the run and of each reset window (SPAM's code: 20)."""
    spam_spike_threshold: float = field(default=2.0, metadata=kc("SPAM_SPIKE_THRESHOLD"))
    """z-score of the gradient norm above which a step is a spike; 0 turns detection off."""
    spam_periodic_reset: bool = field(default=True, metadata=kc("SPAM_PERIODIC_RESET"))
    spam_interval: int = field(default=1000, metadata=kc("SPAM_INTERVAL"))
    spam_reset_bias_correction: bool = field(default=False, metadata=kc("SPAM_RESET_BIAS_CORRECTION"))
    """A periodic reset also zeroes Adam's step counts (bias correction restarts); SPAM's code keeps them."""
    spam_warmup: bool = field(default=True, metadata=kc("SPAM_WARMUP"))
    spam_warmup_steps: int = field(default=100, metadata=kc("SPAM_WARMUP_STEPS"))
    spam_warmup_start: float = field(default=0.01, metadata=kc("SPAM_WARMUP_START_FACTOR"))
    """The update's scale on the first step after a reset, rising to 1 along a half cosine."""
    adamwprune_base: str = field(
        default="adamw", metadata=kc("ADAMWPRUNE_BASE_OPTIMIZER_NAME", "--adamwprune-base")
    )
    """The optimizer AdamWPrune is built on: a key of ADAMWPRUNE_BASES."""
    adamwprune_variant: str = field(
        default="bitter0", metadata=kc("GPT2_ADAMWPRUNE_VARIANT", "--adamwprune-variant")
    )
    """A key of ADAMWPRUNE_VARIANTS."""
    bitter2_scaling: str = field(default="iterations", metadata=kc("ADAMWPRUNE_BITTER2_SCALING"))
    """How bitter2 spends what state pruning saves: a key of BITTER2_SCALINGS."""

    def __post_init__(self) -> None:
        check(self, "name", self.name in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")
        check(self, "beta1", 0.0 <= self.beta1 < 1.0, "a number in [0, 1)")
        check(self, "beta2", 0.0 <= self.beta2 < 1.0, "a number in [0, 1)")
        check(self, "eps", 0.0 < self.eps < 1.0, "a number in (0, 1)")
        check(self, "weight_decay", self.weight_decay >= 0.0, "a number >= 0")
        check(self, "spam_theta", self.spam_theta > 0.0, "a number > 0")
        check(self, "spam_spike_threshold", self.spam_spike_threshold >= 0.0, "0 (off) or a positive z-score")
        check(self, "spam_interval", self.spam_interval >= 1, "1 or more")
        check(self, "spam_warmup_steps", self.spam_warmup_steps >= 1, "1 or more")
        check(self, "spam_clip_grace_steps", self.spam_clip_grace_steps >= 0, "0 or more")
        check(self, "spam_warmup_start", 0.0 < self.spam_warmup_start <= 1.0, "a number in (0, 1]")
        check(
            self,
            "adamwprune_base",
            self.adamwprune_base in ADAMWPRUNE_BASES,
            f"one of {', '.join(ADAMWPRUNE_BASES)}",
        )
        check(
            self,
            "adamwprune_variant",
            self.adamwprune_variant in ADAMWPRUNE_VARIANTS,
            f"one of {', '.join(ADAMWPRUNE_VARIANTS)}",
        )
        check(
            self,
            "bitter2_scaling",
            self.bitter2_scaling in BITTER2_SCALINGS,
            f"one of {', '.join(BITTER2_SCALINGS)}",
        )

    def spam_config(self) -> SpamConfig:
        return SpamConfig(
            clip=self.spam_clip,
            theta=self.spam_theta,
            clip_grace_steps=self.spam_clip_grace_steps,
            spike_threshold=self.spam_spike_threshold,
            periodic_reset=self.spam_periodic_reset,
            reset_interval=self.spam_interval,
            reset_bias_correction=self.spam_reset_bias_correction,
            warmup=self.spam_warmup,
            warmup_steps=self.spam_warmup_steps,
            warmup_start=self.spam_warmup_start,
        )

    @property
    def label(self) -> str:
        """The optimizer as run names and reports show it (optimizer_label)."""
        return optimizer_label(self.name, self.adamwprune_base)


def optimizer_label(name: str, adamwprune_base: str) -> str:
    """adamwprune on the SPAM base shows as adamwprune-spam, so two bases never share a run name."""
    if name == "adamwprune" and adamwprune_base != "adamw":
        return f"adamwprune-{ADAMWPRUNE_BASE_TAGS[adamwprune_base]}"
    return name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >=2-D tensors (matmul weights, embeddings) decay; biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _adamw_kwargs(groups: list[dict], s: OptimizerSettings, lr: float, fused: bool | None) -> dict:
    """AdamW's arguments: fused into one kernel when every parameter is on a CUDA device (or if asked)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return dict(lr=lr, betas=(s.beta1, s.beta2), eps=s.eps, fused=fused, foreach=None if fused else True)


def build_adamw(
    groups: list[dict], s: OptimizerSettings, lr: float, compile: bool, fused: bool | None = None
) -> torch.optim.Optimizer:
    """torch.optim.AdamW."""
    return torch.optim.AdamW(groups, **_adamw_kwargs(groups, s, lr, fused))


def build_adamwspam(
    groups: list[dict], s: OptimizerSettings, lr: float, compile: bool, fused: bool | None = None
) -> torch.optim.Optimizer:
    """AdamW with the SPAM features (lib/optim/spam.py); `compile` fuses its step on CUDA."""
    return AdamWSPAM(groups, spam=s.spam_config(), compile=compile, **_adamw_kwargs(groups, s, lr, fused))


Builder = Callable[..., torch.optim.Optimizer]

# AdamWPrune's base (ADAMWPRUNE_BASE_ADAMW / _ADAMWSPAM, as in the seed project): the optimizer
# whose exp_avg / exp_avg_sq the state pruner (lib/pruning) scores, so pruning keeps no state.
ADAMWPRUNE_BASES: dict[str, Builder] = {
    "adamw": build_adamw,
    "adamwspam": build_adamwspam,
}
# How a base other than AdamW shows in run names (gpt2_adamwprune-spam_bitter1_state_50).
ADAMWPRUNE_BASE_TAGS = {"adamwspam": "spam"}


def build_adamwprune(
    groups: list[dict], s: OptimizerSettings, lr: float, compile: bool, fused: bool | None = None
) -> torch.optim.Optimizer:
    """AdamWPrune: its base optimizer (ADAMWPRUNE_BASE_OPTIMIZER_NAME); the pruning is lib/pruning's."""
    return ADAMWPRUNE_BASES[s.adamwprune_base](groups, s, lr, compile, fused)


OPTIMIZERS: dict[str, Builder] = {
    "adamw": build_adamw,
    "adamwspam": build_adamwspam,
    "adamwprune": build_adamwprune,
}


def build_optimizer(
    model: nn.Module, s: OptimizerSettings, lr: float, compile: bool = True, fused: bool | None = None
) -> torch.optim.Optimizer:
    """The optimizer named by `s.name` over `model`'s parameters; compile=False keeps it eager.

    fused=None fuses AdamW's step into one kernel on CUDA (torch's fused AdamW, which takes
    GradScaler's overflow flag on the device); tests pass True to take that path on the CPU.
    """
    return OPTIMIZERS[s.name](param_groups(model, s.weight_decay), s, lr, compile, fused)
