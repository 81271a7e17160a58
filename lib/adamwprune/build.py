"""Every run's optimizer and pruner. AdamWPrune's pair is resolved here: the optimizer is its base
(lib/optim builds it) and the pruner scores by its variant over that optimizer's moments (on
lib/pruning's shared schedule); every other optimizer and method is built by lib/optim and
lib/pruning as they are.

    optimizer = build_optimizer(model, s.optimizer, s.adamwprune, learning_rate, compile=True)
    pruner = build_pruner(model, optimizer, s.pruning, s.adamwprune, total_iters)  # None: dense
"""

import dataclasses

import torch
import torch.nn as nn

from lib.adamwprune import AdamWPruneSettings
from lib.adamwprune.variants import VARIANTS
from lib.optim import OptimizerSettings
from lib.optim import build as optim
from lib.pruning import PruningSettings
from lib.pruning import build as pruning
from lib.pruning.pruner import Pruner


def build_optimizer(
    model: nn.Module,
    s: OptimizerSettings,
    adamwprune: AdamWPruneSettings,
    learning_rate: float,
    compile: bool = True,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """The run's optimizer: AdamWPrune is its base (ADAMWPRUNE_BASE_OPTIMIZER_NAME), with that base's
    settings; the others are lib/optim's (see lib/optim/build.build_optimizer for compile, fused)."""
    if s.name == optim.ADAMWPRUNE:
        s = dataclasses.replace(s, name=adamwprune.base)
    return optim.build_optimizer(model, s, learning_rate, compile, fused)


def build_pruner(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    s: PruningSettings,
    adamwprune: AdamWPruneSettings,
    total_iters: int,
) -> Pruner | None:
    """The run's pruner (None for dense training): state pruning scores by AdamWPrune's variant
    over the optimizer's own moments; the other methods are lib/pruning's."""
    if s.method == pruning.STATE:
        v = VARIANTS[adamwprune.variant]
        return pruning.build_scored(model, optimizer, s, total_iters, v.score, needs_state=v.needs_state)
    return pruning.build_pruner(model, optimizer, s, total_iters)
