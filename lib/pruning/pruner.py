"""The pruning mechanism every method shares: prunable set, schedule, exact threshold, zeros kept.

No mask is stored. A pruned weight is exactly zero, its Adam moments are zeroed
when it is pruned, and from then on its gradient is multiplied by (w != 0)
before every optimizer step: with zero gradient and zero moments, Adam's update
is 0 / (0 + eps) = 0 and weight decay scales 0 to 0, so it stays zero without a
mask tensor (0 bits of bookkeeping per weight). Methods differ only in the score.
"""

import math

import torch
import torch.nn as nn

from lib.pruning import PruningError, PruningSettings
from lib.pruning.schedule import is_update_step, sparsity_at
from lib.pruning.scores import ScoreFn


def prunable_parameters(
    model: nn.Module, *, include_embeddings: bool = False, include_vectors: bool = False
) -> list[tuple[str, nn.Parameter]]:
    """Linear weights (not a head tied to an embedding); embeddings and 1-D vectors by option."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linear_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    chosen = []
    for name, p in model.named_parameters():  # each tied tensor once
        if "lora_" in name:  # LoRA adapters (lib/convert/lora.py) are never pruned
            continue
        if id(p) in linear_ids and id(p) not in embedding_ids:
            chosen.append((name, p))
        elif id(p) in embedding_ids and include_embeddings:
            chosen.append((name, p))
        elif p.dim() < 2 and include_vectors:
            chosen.append((name, p))
    return chosen


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly k entries of the 1-D `scores` with the lowest values.

    Ties at the k-th value are broken by position, so the count is exact whatever
    the scores (all equal, many zeros). Runs on the scores' device without syncs.
    """
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    # On CUDA a radix sort beats kthvalue ~100x on GPT-2's 85M weights (docs/benchmarks.md);
    # on the CPU kthvalue's linear-time selection is the faster.
    kth = scores.sort().values[k - 1] if scores.is_cuda else torch.kthvalue(scores, k).values
    below = scores < kth
    ties = scores == kth
    room = k - below.sum()
    return below | (ties & (ties.cumsum(0) <= room))


class Pruner:
    """Prunes the model's prunable weights to `settings.target_sparsity` along the schedule, scoring
    with `score_fn`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: PruningSettings,
        total_iters: int,
        score_fn: ScoreFn,
        *,
        needs_state: bool,
    ):
        ramp_end = settings.ramp_end(total_iters)  # checked against the warm-up and the run first
        params = prunable_parameters(
            model, include_embeddings=settings.include_embeddings, include_vectors=settings.include_vectors
        )
        if not params:
            raise PruningError("no prunable parameters in the model (PRUNING_INCLUDE_* in make menuconfig)")
        self.names = [n for n, _ in params]
        self.weights = [p for _, p in params]
        self.score_fn = score_fn
        self.optimizer = optimizer
        self.settings = settings  # target, warm-up, frequency, ramp, threshold
        self.ramp_end = ramp_end
        self.needs_state = needs_state
        self.num_prunable = sum(w.numel() for w in self.weights)
        self.active = False  # True once a mask update has zeroed weights
        self.on_cuda = self.weights[0].is_cuda
        # One fused kernel per tensor on CUDA (the loop over tensors runs once, at tracing);
        # multi-tensor kernels elsewhere.
        self._mask_gradients = (
            torch.compile(mask_gradients_, dynamic=False) if self.on_cuda else foreach_mask_gradients_
        )

    # -- the schedule's two hooks --------------------------------------------------------------

    @torch.no_grad()
    def before_step(self, found_inf: torch.Tensor | None = None) -> None:
        """After backward, before the optimizer: pruned weights get no gradient.

        `found_inf` is GradScaler's overflow flag (a device tensor, nonzero when this step
        will be skipped), or None without fp16 loss scaling.
        """
        if self.active and self.weights[0].requires_grad:  # frozen (LoRA) base weights get no gradient
            self._mask_gradients([w.grad for w in self.weights], self.weights)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """After optimizer step number `step` (1-based): update the masks when the schedule says so."""
        s = self.settings
        if is_update_step(step, warmup=s.pruning_warmup, frequency=s.frequency, ramp_end=self.ramp_end):
            sparsity = sparsity_at(
                step, target=s.target_sparsity, warmup=s.pruning_warmup, ramp_end=self.ramp_end, ramp=s.ramp
            )
            self.prune_to(sparsity)

    # -- one mask update ------------------------------------------------------------------------

    def scores(self) -> list[torch.Tensor]:
        """Importance of each prunable weight (higher is kept)."""
        out = []
        for name, w in zip(self.names, self.weights, strict=True):
            state = self.optimizer.state.get(w, {})
            m, v = state.get("exp_avg"), state.get("exp_avg_sq")
            if self.needs_state and (m is None or v is None):
                raise PruningError(
                    f"this pruning score reads Adam's moments, but the optimizer "
                    f"({type(self.optimizer).__name__}) holds none for {name}: it has not stepped "
                    "with a gradient for that weight yet. Start pruning after the first optimizer "
                    "step (PRUNING_WARMUP >= 1), or use a score of the weights alone (bitter1, magnitude)."
                )
            out.append(self.score_fn(w.detach(), m, v))
        return out

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Zero the lowest-scoring weights so that exactly round(sparsity * N) are zero (or per layer)."""
        # Weights already pruned stay pruned: the ramp only grows.
        scores = [
            s.float().masked_fill(w == 0, -math.inf) for s, w in zip(self.scores(), self.weights, strict=True)
        ]
        if self.settings.global_threshold:
            flat = torch.cat([s.flatten() for s in scores])
            masks = lowest_k_mask(flat, round(sparsity * flat.numel())).split([s.numel() for s in scores])
        else:
            masks = [lowest_k_mask(s.flatten(), round(sparsity * s.numel())) for s in scores]
        for w, mask in zip(self.weights, masks, strict=True):
            mask = mask.view_as(w)
            w.masked_fill_(mask, 0.0)
            for state_tensor in self.optimizer.state.get(w, {}).values():
                if state_tensor.shape == w.shape:  # exp_avg, exp_avg_sq (not the step count)
                    state_tensor.masked_fill_(mask, 0.0)
        self.active = True

    # -- measurement and state ----------------------------------------------------------------

    @torch.no_grad()
    def sparsity(self) -> dict:
        """Measured zeros per prunable tensor and overall (reads the device)."""
        zeros = torch.stack([(w == 0).sum() for w in self.weights]).tolist()
        layers = {
            n: {"zeros": z, "numel": w.numel()}
            for n, z, w in zip(self.names, zeros, self.weights, strict=True)
        }
        return {"prunable": sum(zeros) / self.num_prunable, "layers": layers}

    def extra_tensors(self) -> list[torch.Tensor]:
        """Tensors the method keeps besides the weights and optimizer states (none here)."""
        return []

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.extra_tensors())

    def state_dict(self) -> dict:
        return {"active": self.active, "extra": [t.detach().cpu() for t in self.extra_tensors()]}

    def load_state_dict(self, state: dict) -> None:
        self.active = state["active"]
        for t, saved in zip(self.extra_tensors(), state["extra"], strict=True):
            t.copy_(saved)


def mask_gradients_(grads: list[torch.Tensor], weights: list[torch.Tensor]) -> None:
    """Zero each gradient where its weight is zero, in place, so a pruned weight stays an
    exact zero. Compiled: one kernel per tensor reading g and w once and writing g."""
    for g, w in zip(grads, weights, strict=True):
        g.masked_fill_(w == 0, 0.0)


def foreach_mask_gradients_(grads: list[torch.Tensor], weights: list[torch.Tensor]) -> None:
    """mask_gradients_ in multi-tensor kernels (three passes), for runs that do not compile."""
    torch._foreach_mul_(grads, torch._foreach_sign(torch._foreach_abs(weights)))


# Multiplier of the integer hash that dithers bf16 movement scores (Knuth's multiplicative hash).
HASH_MULTIPLIER = -1640531535  # 2654435761 as a wrapped int32


def accumulate_movement_(
    scores: list[torch.Tensor],
    grads: list[torch.Tensor],
    weights: list[torch.Tensor],
    found_inf: torch.Tensor | None = None,
) -> None:
    """scores -= g * w, in place, each bf16 score rounded stochastically from fp32.

    Where GradScaler's `found_inf` is nonzero (an overflowed step it will skip) the
    scores keep their values: an infinite gradient must not fix them at +-inf or NaN.

    Plain bf16 accumulation would stall: once |S| is 2^8 times a step's |g * w| every
    increment rounds away. Stochastic rounding keeps the sum unbiased: add a random
    16-bit number to the fp32 bit pattern, then cut the low 16 bits (which bf16 drops).
    The randomness is a hash of the gradient's and weight's own bits, so every DDP rank,
    holding the same all-reduced gradients and weights, rounds the same way.
    """
    for s, g, w in zip(scores, grads, weights, strict=True):
        x = s.float() - g.float() * w.float()
        mix = g.float().view(torch.int32) ^ w.float().view(torch.int32)
        noise = (mix * HASH_MULTIPLIER) >> 16 & 0xFFFF
        bits = (x.view(torch.int32) + noise) & -65536  # 0xFFFF0000: bf16's bits of the result
        new = bits.view(torch.float32)  # exactly a bf16 value: the dropped bits are zero
        if found_inf is not None:
            new = torch.where(found_inf == 0, new, s.float())
        s.copy_(new)


def movement_step_(
    scores: list[torch.Tensor],
    grads: list[torch.Tensor],
    weights: list[torch.Tensor],
    mask: bool,
    found_inf: torch.Tensor | None = None,
) -> None:
    """accumulate_movement_, then (once masks are live) mask_gradients_: compiled, each tensor's
    g, w and score are read once."""
    accumulate_movement_(scores, grads, weights, found_inf)
    if mask:
        mask_gradients_(grads, weights)


class MovementPruner(Pruner):
    """Movement pruning (Sanh et al., 2020): the score accumulates -g * w over every step.

    A weight moving away from zero (g and w of opposite signs) gains importance; one
    being pulled toward zero loses it. The accumulated score is this method's only
    extra state: one bf16 tensor the size of the prunable weights (half a weight's
    bytes), accumulated with stochastic rounding (accumulate_movement_).
    """

    def __init__(self, model, optimizer, settings: PruningSettings, total_iters: int):
        super().__init__(model, optimizer, settings, total_iters, lambda w, m, v: w, needs_state=False)
        self.movement = [torch.zeros_like(w, dtype=torch.bfloat16) for w in self.weights]
        # On CUDA the scores and the gradient mask in one kernel per tensor.
        self._step = torch.compile(movement_step_, dynamic=False) if self.on_cuda else None

    @torch.no_grad()
    def before_step(self, found_inf: torch.Tensor | None = None) -> None:
        # S -= g * w, on unscaled gradients (the trainer unscales before this hook).
        grads = [w.grad for w in self.weights]
        if self._step is not None:
            self._step(self.movement, grads, self.weights, self.active, found_inf)
        else:
            accumulate_movement_(self.movement, grads, self.weights, found_inf)
            super().before_step()

    def scores(self) -> list[torch.Tensor]:
        return self.movement

    def extra_tensors(self) -> list[torch.Tensor]:
        return self.movement
