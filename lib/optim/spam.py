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


def spike_bounds(exp_avg_sqs: list[torch.Tensor], theta: float) -> list[torch.Tensor]:
    """Per-entry clip bounds sqrt(theta * v), or the largest float where v == 0.

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
    return bound


def spike_clip_(grads: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], theta: float) -> None:
    """Clip in place each entry with g^2 > theta * v to sign(g) * sqrt(theta * v) (see spike_bounds)."""
    bound = spike_bounds(exp_avg_sqs, theta)
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


def spam_adamw_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    theta: float | None,
    scale_m: torch.Tensor | None,
    scale_v: torch.Tensor | None,
) -> None:
    """SPAM's pre-step and AdamW's update (Loshchilov & Hutter) of one parameter group, in place.

    The arithmetic of torch.optim.AdamW after spam_prestep_; lr is a 0-d tensor so a
    new learning rate does not recompile. Compiled on CUDA, the whole step reads
    each gradient, weight and moment once and writes each once, as the fused AdamW
    kernel does: SPAM adds no memory pass of its own.
    """
    if theta is not None:  # clipped copies, not in place: the gradients need no write-back
        bound = spike_bounds(exp_avg_sqs, theta)
        grads = torch._foreach_minimum(grads, bound)
        torch._foreach_neg_(bound)
        grads = torch._foreach_maximum(grads, bound)
    spam_prestep_(grads, exp_avgs, exp_avg_sqs, None, scale_m, scale_v)
    torch._foreach_add_(steps, 1.0)
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    # step size lr / (1 - beta1^t); denominator sqrt(v) / sqrt(1 - beta2^t) + eps
    bias1 = torch._foreach_pow(beta1, steps)
    torch._foreach_neg_(bias1)
    torch._foreach_add_(bias1, 1.0)
    bias2 = torch._foreach_pow(beta2, steps)
    torch._foreach_neg_(bias2)
    torch._foreach_add_(bias2, 1.0)
    torch._foreach_sqrt_(bias2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias2)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, bias1)
    torch._foreach_div_(denom, lr)
    torch._foreach_neg_(denom)
    torch._foreach_addcdiv_(params, exp_avgs, denom)


def reset_warmup_scale(steps_since_reset: int, warmup_steps: int) -> float:
    """Learning-rate factor after a periodic reset: a half cosine from ~0 to 1 over warmup_steps."""
    if steps_since_reset >= warmup_steps:
        return 1.0
    return 0.5 * (1.0 - math.cos(math.pi * (steps_since_reset + 1) / (warmup_steps + 1)))


class AdamWSPAM(torch.optim.AdamW):
    """torch.optim.AdamW (fused on CUDA) with the SPAM features applied around its step."""

    def __init__(
        self,
        params,
        *,
        spam: SpamConfig,
        compile: bool = True,
        one_pass: bool | None = None,
        **adamw_kwargs,
    ):
        super().__init__(params, **adamw_kwargs)
        self.spam = spam
        device = self.param_groups[0]["params"][0].device
        # Device-resident statistics: [EMA mean, EMA second moment, count, spikes].
        self.norm_stats = torch.zeros(4, device=device)
        self._lr = torch.zeros((), device=device)
        self.steps_since_reset = 0
        self.num_steps = 0
        self._grad_norm: torch.Tensor | None = None
        compiled = compile and device.type == "cuda"
        # One pass (spam_adamw_) where it is compiled into a fused kernel; torch's fused or
        # foreach AdamW after a separate pre-step elsewhere. Tests force either path.
        self.one_pass = compiled if one_pass is None else one_pass
        if self.one_pass and any(g.get("amsgrad") or g.get("maximize") for g in self.param_groups):
            raise ValueError("AdamWSPAM's one-pass step supports neither amsgrad nor maximize")
        self._prestep = torch.compile(spam_prestep_, dynamic=False) if compiled else spam_prestep_
        self._one_pass_step = torch.compile(spam_adamw_, dynamic=False) if compiled else spam_adamw_

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
        params, exp_avgs, exp_avg_sqs, steps = self._states()
        scale_m = scale_v = None
        if params and s.spike_threshold > 0:
            scale_m, scale_v = self._detect_spike(params)
        theta = s.theta if s.clip else None
        scale = 1.0
        if s.warmup and s.periodic_reset and self.num_steps > s.reset_interval:
            scale = reset_warmup_scale(self.steps_since_reset, s.warmup_steps)
        with_grads = sum(p.grad is not None for g in self.param_groups for p in g["params"])
        if self.one_pass and params and len(params) == with_grads:  # every moment exists
            self._step_one_pass(theta, scale_m, scale_v, scale)
            self.steps_since_reset += 1
            return None
        if params and (theta is not None or scale_m is not None):
            self._prestep([p.grad for p in params], exp_avgs, exp_avg_sqs, theta, scale_m, scale_v)
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

    def _step_one_pass(self, theta, scale_m, scale_v, lr_scale: float) -> None:
        """spam_adamw_ per parameter group (each group has its own weight decay and maybe lr)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            state = [self.state[p] for p in params]
            self._lr.fill_(group["lr"] * lr_scale)  # a device write, no host sync
            beta1, beta2 = group["betas"]
            self._one_pass_step(
                params,
                [p.grad for p in params],
                [st["exp_avg"] for st in state],
                [st["exp_avg_sq"] for st in state],
                [st["step"] for st in state],
                self._lr,
                beta1,
                beta2,
                group["eps"],
                group["weight_decay"],
                theta,
                scale_m,
                scale_v,
            )

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
