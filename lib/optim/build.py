"""The optimizers' builders: BUILDERS maps each name of OPTIMIZERS (lib/optim) but AdamWPrune
(lib/adamwprune/build.py, on one of these) to its builder."""

from collections.abc import Callable

import torch
import torch.nn as nn

from lib.optim import OPTIMIZERS, OptimizerSettings
from lib.optim.spam import AdamWSPAM


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >=2-D tensors (matmul weights, embeddings) decay; biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _adamw_kwargs(groups: list[dict], s: OptimizerSettings, learning_rate: float, fused: bool | None) -> dict:
    """AdamW's arguments: fused into one kernel when every parameter is on a CUDA device (or if asked)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return dict(
        lr=learning_rate, betas=(s.beta1, s.beta2), eps=s.eps, fused=fused, foreach=None if fused else True
    )


def build_adamw(
    groups: list[dict], s: OptimizerSettings, learning_rate: float, compile: bool, fused: bool | None = None
) -> torch.optim.Optimizer:
    """torch.optim.AdamW."""
    return torch.optim.AdamW(groups, **_adamw_kwargs(groups, s, learning_rate, fused))


def build_adamwspam(
    groups: list[dict], s: OptimizerSettings, learning_rate: float, compile: bool, fused: bool | None = None
) -> torch.optim.Optimizer:
    """AdamW with the SPAM features (lib/optim/spam.py); `compile` fuses its step on CUDA."""
    return AdamWSPAM(groups, settings=s, compile=compile, **_adamw_kwargs(groups, s, learning_rate, fused))


Builder = Callable[..., torch.optim.Optimizer]

BUILDERS: dict[str, Builder] = {
    "adamw": build_adamw,
    "adamwspam": build_adamwspam,
}
ADAMWPRUNE = "adamwprune"  # built on one of BUILDERS by lib/adamwprune/build.py


def build_optimizer(
    model: nn.Module,
    s: OptimizerSettings,
    learning_rate: float,
    compile: bool = True,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """The optimizer named by `s.name` over `model`'s parameters; compile=False keeps it eager.

    fused=None fuses AdamW's step into one kernel on CUDA (torch's fused AdamW, which takes
    GradScaler's overflow flag on the device); tests pass True to take that path on the CPU.
    """
    if s.name not in BUILDERS:
        raise ValueError(f"{s.name!r} is built on its base optimizer: lib/adamwprune/build.py")
    return BUILDERS[s.name](param_groups(model, s.weight_decay), s, learning_rate, compile, fused)


if (*BUILDERS, ADAMWPRUNE) != OPTIMIZERS:
    raise ImportError("lib/optim/build.py: BUILDERS and AdamWPrune must build exactly OPTIMIZERS")
