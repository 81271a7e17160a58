"""AdamWSPAM: AdamW with spike-aware clipping and momentum resets.

After Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training" (ICLR 2025), with the seed project's soft spike reset. Every feature
is a multi-tensor (foreach) operation or a decision on the host's own step
counter: the optimizer never reads a tensor back to the host. With every
feature off it is exactly torch.optim.AdamW.
"""

import math
from dataclasses import dataclass

import torch

# A spike's soft reset keeps half the first moment and 90% of the second (the seed project's values).
SPIKE_FIRST_MOMENT_SCALE = 0.5
SPIKE_SECOND_MOMENT_SCALE = 0.9
# Gradient-norm statistics: exponential moving mean/variance, ~100-step memory; no verdict before 10 steps.
NORM_EMA_DECAY = 0.99
NORM_MIN_HISTORY = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class SpamConfig:
    """The SPAM features; the Kconfig symbols live in OptimizerSettings."""

    clip: bool = True
    theta: float = 50.0
    spike_threshold: float = 2.0
    periodic_reset: bool = True
    reset_interval: int = 1000
    warmup: bool = True
    warmup_steps: int = 100


def spike_clip_(grads: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], theta: float) -> None:
    """Clip in place each entry with g^2 > theta * v to sign(g) * sqrt(theta * v).

    Entries whose second moment is still zero (never seen a gradient, or just
    reset) are left alone, else a rare token's first gradient would be zeroed
    and, its v staying zero, it would never learn.
    """
    bound = torch._foreach_sqrt(torch._foreach_mul(exp_avg_sqs, theta))
    unset = torch._foreach_sign(exp_avg_sqs)  # 1 where v > 0, 0 where v == 0
    torch._foreach_neg_(unset)
    torch._foreach_add_(unset, 1.0)
    torch._foreach_mul_(unset, torch.finfo(torch.float32).max)
    torch._foreach_add_(bound, unset)
    torch._foreach_clamp_max_(grads, bound)
    torch._foreach_neg_(bound)
    torch._foreach_clamp_min_(grads, bound)


def spam_prestep_(
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    theta: float | None,
    scale_m: torch.Tensor | None,
    scale_v: torch.Tensor | None,
) -> None:
    """Everything SPAM does to gradients and moments before the AdamW step, in place.

    The clip (against the moments as they are), then the spike's soft reset (scale_m,
    scale_v: 0-d tensors, 1.0 when there was no spike). One function so that on CUDA
    torch.compile fuses it into a few multi-tensor kernels instead of ~11 passes.
    """
    if theta is not None:
        spike_clip_(grads, exp_avg_sqs, theta)
    if scale_m is not None:
        torch._foreach_mul_(exp_avgs, scale_m)
        torch._foreach_mul_(exp_avg_sqs, scale_v)


def reset_warmup_scale(steps_since_reset: int, warmup_steps: int) -> float:
    """Learning-rate factor after a periodic reset: a half cosine from ~0 to 1 over warmup_steps."""
    if steps_since_reset >= warmup_steps:
        return 1.0
    return 0.5 * (1.0 - math.cos(math.pi * (steps_since_reset + 1) / (warmup_steps + 1)))


class AdamWSPAM(torch.optim.AdamW):
    """torch.optim.AdamW (fused on CUDA) with the SPAM features applied around its step."""

    def __init__(self, params, *, spam: SpamConfig, compile: bool = True, **adamw_kwargs):
        super().__init__(params, **adamw_kwargs)
        self.spam = spam
        device = self.param_groups[0]["params"][0].device
        # Device-resident statistics: [EMA mean, EMA second moment, count, spikes].
        self.norm_stats = torch.zeros(4, device=device)
        self.steps_since_reset = 0
        self.num_steps = 0
        self._grad_norm: torch.Tensor | None = None
        # Compiled on CUDA (fused kernels; compiles once, at the first step with moments).
        self._prestep = (
            torch.compile(spam_prestep_, dynamic=False) if device.type == "cuda" else spam_prestep_
        )

    def _states(self) -> tuple[list, list, list, list]:
        params, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if p.grad is None or not state:
                    continue
                params.append(p)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
        return params, exp_avgs, exp_avg_sqs, steps

    def observe_grad_norm(self, norm: torch.Tensor) -> None:
        """The trainer's global gradient norm before clipping, for the next step's spike test.

        After clipping, most norms sit exactly at the clip bound and their variance
        collapses, so any wobble would look like a spike.
        """
        self._grad_norm = norm

    def _detect_spike(self, params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Moment scales for this step: (0.5, 0.9) on a gradient-norm spike, else (1, 1); on device."""
        norm = self._grad_norm
        if norm is None:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
        self._grad_norm = None
        norm = norm.to(self.norm_stats.device, torch.float32)
        mean, sq, count = self.norm_stats[0], self.norm_stats[1], self.norm_stats[2]
        # A floor of 1% of the mean keeps a near-constant history from making every wobble a spike.
        std = (sq - mean * mean).clamp_min(0.0).sqrt().maximum(0.01 * mean)
        spike = (count >= NORM_MIN_HISTORY) & ((norm - mean) / std > self.spam.spike_threshold)
        one = torch.ones((), device=norm.device)
        scales = (
            torch.where(spike, SPIKE_FIRST_MOMENT_SCALE, one),
            torch.where(spike, SPIKE_SECOND_MOMENT_SCALE, one),
        )
        # Exponential moving statistics, bias-corrected while the history is short.
        decay = torch.where(count > 0, NORM_EMA_DECAY, 0.0)
        self.norm_stats[0] = decay * mean + (1 - decay) * norm
        self.norm_stats[1] = decay * sq + (1 - decay) * norm * norm
        self.norm_stats[2] += 1
        self.norm_stats[3] += spike.float()
        return scales

    def _periodic_reset(self, exp_avgs: list, exp_avg_sqs: list, steps: list) -> None:
        """Zero both moments and Adam's step counts, so bias correction restarts too."""
        if exp_avgs:
            torch._foreach_zero_(exp_avgs)
            torch._foreach_zero_(exp_avg_sqs)
            torch._foreach_zero_(steps)
        self.steps_since_reset = 0

    @torch.no_grad()
    def step(self, closure=None):
        s = self.spam
        self.num_steps += 1
        if s.periodic_reset and self.num_steps > 1 and (self.num_steps - 1) % s.reset_interval == 0:
            self._periodic_reset(*self._states()[1:])
        params, exp_avgs, exp_avg_sqs, _ = self._states()
        if params:
            scale_m, scale_v = self._detect_spike(params) if s.spike_threshold > 0 else (None, None)
            theta = s.theta if s.clip else None
            if theta is not None or scale_m is not None:
                self._prestep([p.grad for p in params], exp_avgs, exp_avg_sqs, theta, scale_m, scale_v)
        scale = 1.0
        if s.warmup and s.periodic_reset and self.num_steps > s.reset_interval:
            scale = reset_warmup_scale(self.steps_since_reset, s.warmup_steps)
        base_lrs = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * scale
        try:
            loss = super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, base_lrs, strict=True):
                g["lr"] = lr
        self.steps_since_reset += 1
        return loss

    def log_stats(self) -> dict:
        """Spikes detected so far (reads the device: call only when logging)."""
        return {"spam_spikes": int(self.norm_stats[3].item())}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["spam"] = {
            "norm_stats": self.norm_stats.clone(),
            "steps_since_reset": self.steps_since_reset,
            "num_steps": self.num_steps,
        }
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        spam = state_dict.pop("spam")
        super().load_state_dict(state_dict)
        self.norm_stats.copy_(spam["norm_stats"])
        self.steps_since_reset = spam["steps_since_reset"]
        self.num_steps = spam["num_steps"]
