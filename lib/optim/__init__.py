"""Optimizers: a registry from the Kconfig choice name to a builder.

Every builder takes the model's parameter groups (decayed matrices, undecayed
vectors) and the OptimizerSettings, so runs that differ only in the optimizer
differ in nothing else.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from lib.validate import check, kc


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerSettings:
    """The optimizer and its hyper-parameters (the learning rate lives in TrainingSettings)."""

    name: str = field(default="adamw", metadata=kc("OPTIMIZER", "--optimizer"))
    """A key of OPTIMIZERS."""
    beta1: float = field(default=0.9, metadata=kc("ADAMW_BETA1"))
    beta2: float = field(default=0.95, metadata=kc("ADAMW_BETA2"))
    eps: float = field(default=1e-8, metadata=kc("ADAMW_EPSILON"))
    weight_decay: float = field(default=0.1, metadata=kc("ADAMW_WEIGHT_DECAY", "--weight-decay"))

    def __post_init__(self) -> None:
        check(self, "name", self.name in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")
        check(self, "beta1", 0.0 <= self.beta1 < 1.0, "a number in [0, 1)")
        check(self, "beta2", 0.0 <= self.beta2 < 1.0, "a number in [0, 1)")
        check(self, "eps", 0.0 < self.eps < 1.0, "a number in (0, 1)")
        check(self, "weight_decay", self.weight_decay >= 0.0, "a number >= 0")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >=2-D tensors (matmul weights, embeddings) decay; biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_adamw(groups: list[dict], s: OptimizerSettings, lr: float) -> torch.optim.Optimizer:
    """torch.optim.AdamW, fused into one kernel when every parameter is on a CUDA device."""
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(s.beta1, s.beta2),
        eps=s.eps,
        fused=on_cuda,
        foreach=None if on_cuda else True,
    )


OPTIMIZERS: dict[str, Callable[[list[dict], OptimizerSettings, float], torch.optim.Optimizer]] = {
    "adamw": build_adamw,
}


def build_optimizer(model: nn.Module, s: OptimizerSettings, lr: float) -> torch.optim.Optimizer:
    """The optimizer named by `s.name` over `model`'s parameters."""
    return OPTIMIZERS[s.name](param_groups(model, s.weight_decay), s, lr)
