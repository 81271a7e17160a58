"""AdamWSPAM: AdamW with spike-aware clipping and momentum resets.

After Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training" (ICLR 2025), with the seed project's soft spike reset on a gradient-norm
z-score. Every feature is a multi-tensor (foreach) operation or a decision on the
host's own iteration clock: the optimizer never reads a tensor back to the host.
With every feature off it is exactly torch.optim.AdamW.

Under fp16 loss scaling, GradScaler hands each step its overflow flag (`found_inf`,
a device tensor); a step whose gradients overflowed then changes nothing: not the
weights, the moments, Adam's step counts nor the spike statistics. SPAM's reset,
warm-up and clip grace period follow the iteration clock, as the learning-rate
schedule does, so they fall on the same iterations whether a step was skipped or not.
"""

import math

import torch

from lib.optim import OptimizerSettings

# A spike's soft reset keeps half the first moment and 90% of the second (the seed project's values).
SPIKE_FIRST_MOMENT_SCALE = 0.5
SPIKE_SECOND_MOMENT_SCALE = 0.9
# Gradient-norm statistics: exponential moving mean/variance, ~100-step memory; no verdict before 10 steps.
NORM_EMA_DECAY = 0.99
NORM_MIN_HISTORY = 10


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


def count_over(grads: list[torch.Tensor], bound: list[torch.Tensor]) -> torch.Tensor:
    """How many entries have |g| > bound, the entries a clip to `bound` changes (0-d float64, on the
    device; exact: summed as float64). Multi-tensor operations, outside any compiled step."""
    excess = torch._foreach_sub(torch._foreach_abs(grads), bound)
    torch._foreach_clamp_min_(excess, 0.0)
    torch._foreach_sign_(excess)  # 1 where clipped, 0 elsewhere
    return torch.stack(torch._foreach_norm(excess, 1, dtype=torch.float64)).sum()


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
    update_lr: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    theta: float | None,
    scale_m: torch.Tensor | None,
    scale_v: torch.Tensor | None,
    found_inf: torch.Tensor | None = None,
) -> None:
    """SPAM's pre-step and AdamW's update (Loshchilov & Hutter) of one parameter group, in place.

    The arithmetic of torch.optim.AdamW after spam_prestep_. `lr` drives the decoupled
    weight decay and `update_lr` the Adam update (they differ only in SPAM's warm-up
    after a reset, which as in SPAM's code leaves the decay alone); both are 0-d tensors
    so a new learning rate does not recompile. Compiled on CUDA, the whole step reads
    each gradient, weight and moment once and writes each once, as the fused AdamW
    kernel does: SPAM adds no memory pass of its own.

    `found_inf` (GradScaler's overflow flag, 0-d) makes the step conditional on the
    device: where it is nonzero the gradients are replaced by zeros, both rates by 0 and
    the moment decays by 1, so weights, moments and step counts keep their exact values.
    """
    if found_inf is not None:
        keep = found_inf == 0
        grads = [torch.where(keep, g, 0.0) for g in grads]  # overflowed values never enter
        lr = torch.where(keep, lr, 0.0)
        update_lr = torch.where(keep, update_lr, 0.0)
        decay1 = torch.where(keep, beta1, 1.0)
        decay2 = torch.where(keep, beta2, 1.0)
        torch._foreach_add_(steps, keep.to(steps[0].device, steps[0].dtype))
    else:
        decay1, decay2 = beta1, beta2
        torch._foreach_add_(steps, 1.0)
    if theta is not None:  # clipped copies, not in place: the gradients need no write-back
        bound = spike_bounds(exp_avg_sqs, theta)
        grads = torch._foreach_minimum(grads, bound)
        torch._foreach_neg_(bound)
        grads = torch._foreach_maximum(grads, bound)
    spam_prestep_(grads, exp_avgs, exp_avg_sqs, None, scale_m, scale_v)
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - decay1)
    torch._foreach_mul_(exp_avg_sqs, decay2)
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
    torch._foreach_div_(denom, update_lr)  # a skipped step divides by 0: m / inf moves nothing
    torch._foreach_neg_(denom)
    torch._foreach_addcdiv_(params, exp_avgs, denom)


def reset_warmup_scale(
    steps_since_reset: int, spam_warmup_steps: int, spam_warmup_start: float = 0.01
) -> float:
    """The Adam update's scale after a periodic reset: a half cosine from SPAM_WARMUP_START_FACTOR to 1 over
    SPAM_WARMUP_STEPS.

    As SPAM's code (CosineDecay(0.99, T)): step 0 of the window (the reset step) gets the start factor.
    """
    if steps_since_reset >= spam_warmup_steps:
        return 1.0
    rise = 0.5 * (1.0 - math.cos(math.pi * steps_since_reset / spam_warmup_steps))  # 0 -> 1
    return spam_warmup_start + (1.0 - spam_warmup_start) * rise


class AdamWSPAM(torch.optim.AdamW):
    """torch.optim.AdamW (fused on CUDA) with the SPAM features applied around its step."""

    def __init__(
        self,
        params,
        *,
        settings: OptimizerSettings,
        compile: bool = True,
        one_pass: bool | None = None,
        **adamw_kwargs,
    ):
        super().__init__(params, **adamw_kwargs)
        self.settings = settings  # the spam_* fields; the rest are AdamW's own arguments
        # GradScaler hands every step its overflow flag instead of skipping step() on the host:
        # the step honours it on the device (spam_adamw_), on every device and path alike.
        self._step_supports_amp_scaling = True
        device = self.param_groups[0]["params"][0].device
        # Device-resident statistics: [EMA mean, EMA second moment, count, spikes].
        self.norm_stats = torch.zeros(4, device=device)
        # Entries the spike clip changed in the last step it was counted on (0-d, on the device).
        # Counting costs a few passes over the gradients, so it runs every count_clipped_every steps
        # only: the trainer sets that to its logging interval, and the count lands in the log line.
        self.clipped = torch.zeros((), dtype=torch.float64, device=device)
        self.count_clipped_every = 1
        self._counted_at = 0  # the step self.clipped belongs to
        self._lr = torch.zeros((), device=device)
        self._update_lr = torch.zeros((), device=device)
        self.steps_since_reset = 0
        self.num_steps = 0
        self._grad_norm: torch.Tensor | None = None
        compiled = compile and device.type == "cuda"
        # One pass (spam_adamw_) where it is compiled into a fused kernel; torch's fused or
        # foreach AdamW after a separate pre-step elsewhere. Tests force either path.
        self.one_pass = compiled if one_pass is None else one_pass
        if any(g.get("amsgrad") or g.get("maximize") for g in self.param_groups):
            raise ValueError("AdamWSPAM supports neither amsgrad nor maximize")
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

    def _init_states(self) -> None:
        """Zero moments and step counts for parameters with a gradient and no state, as AdamW makes them."""
        for group in self.param_groups:
            on_device = group["fused"] or group["capturable"]
            for p in group["params"]:
                if p.grad is not None and not self.state.get(p):
                    self.state[p] = {
                        "step": torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu"),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }

    def observe_grad_norm(self, norm: torch.Tensor) -> None:
        """The trainer's global gradient norm before clipping, for the next step's spike test.

        After clipping, most norms sit exactly at the clip bound and their variance
        collapses, so any wobble would look like a spike.
        """
        self._grad_norm = norm

    def _detect_spike(
        self, params: list[torch.Tensor], found_inf: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Moment scales for this step: (0.5, 0.9) on a gradient-norm spike, else (1, 1); on device.

        A non-finite norm, or a step GradScaler skips, is neither a spike nor part of the
        statistics (as the seed project filtered non-finite norms).
        """
        norm = self._grad_norm
        if norm is None:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
        self._grad_norm = None
        norm = norm.to(self.norm_stats.device, torch.float32)
        valid = torch.isfinite(norm)
        if found_inf is not None:
            valid = valid & (found_inf.to(valid.device) == 0)
        norm = torch.where(valid, norm, 0.0)
        mean, sq, count = self.norm_stats[0], self.norm_stats[1], self.norm_stats[2]
        # A floor of 1% of the mean keeps a near-constant history from making every wobble a spike.
        std = (sq - mean * mean).clamp_min(0.0).sqrt().maximum(0.01 * mean)
        spike = (
            valid & (count >= NORM_MIN_HISTORY) & ((norm - mean) / std > self.settings.spam_spike_threshold)
        )
        one = torch.ones((), device=norm.device)
        scales = (
            torch.where(spike, SPIKE_FIRST_MOMENT_SCALE, one),
            torch.where(spike, SPIKE_SECOND_MOMENT_SCALE, one),
        )
        # Exponential moving statistics, bias-corrected while the history is short.
        decay = torch.where(count > 0, NORM_EMA_DECAY, 0.0)
        updated = torch.stack(
            [decay * mean + (1 - decay) * norm, decay * sq + (1 - decay) * norm * norm, count + 1]
        )
        self.norm_stats[:3] = torch.where(valid, updated, self.norm_stats[:3])
        self.norm_stats[3] += spike.float()
        return scales

    def _periodic_reset(self, exp_avgs: list, exp_avg_sqs: list, steps: list) -> None:
        """Zero both moments (and, with reset_bias_correction, Adam's step counts)."""
        if exp_avgs:
            torch._foreach_zero_(exp_avgs)
            torch._foreach_zero_(exp_avg_sqs)
            if self.settings.spam_reset_bias_correction:
                torch._foreach_zero_(steps)
        self.steps_since_reset = 0

    def _amp_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """GradScaler's overflow flag and scale for this step (None, None without loss scaling).

        Taken over here: torch's AdamW below must not see them (its foreach path refuses them).
        """
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        if found_inf is not None or grad_scale is not None:
            self.found_inf = self.grad_scale = None  # GradScaler deletes both after the step
        return found_inf, grad_scale

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.settings
        found_inf, grad_scale = self._amp_inputs()
        self.num_steps += 1
        if s.spam_periodic_reset and self.num_steps > 1 and (self.num_steps - 1) % s.spam_interval == 0:
            self._periodic_reset(*self._states()[1:])
        if found_inf is not None:
            self._init_states()  # even a skipped first step goes through the device-side path
        params, exp_avgs, exp_avg_sqs, steps = self._states()
        if grad_scale is not None:  # GradScaler.unscale_ was not called: unscale here
            torch._foreach_mul_([p.grad for p in params], grad_scale.double().reciprocal().float())
        scale_m = scale_v = None
        if params and s.spam_spike_threshold > 0:
            scale_m, scale_v = self._detect_spike(params, found_inf)
        clipping = s.spam_clip and self.steps_since_reset >= s.spam_clip_grace_steps
        theta = s.spam_theta if clipping else None
        update_scale = 1.0
        if s.spam_warmup and s.spam_periodic_reset and self.num_steps > s.spam_interval:
            update_scale = reset_warmup_scale(
                self.steps_since_reset, s.spam_warmup_steps, s.spam_warmup_start
            )
        if s.spam_clip and self.num_steps % self.count_clipped_every == 0:
            self.clipped.zero_()
            if theta is not None and params:
                self.clipped.copy_(count_over([p.grad for p in params], spike_bounds(exp_avg_sqs, theta)))
            self._counted_at = self.num_steps
        with_grads = sum(p.grad is not None for g in self.param_groups for p in g["params"])
        every_moment = params and len(params) == with_grads
        if every_moment and (self.one_pass or found_inf is not None):
            self._step_one_pass(theta, scale_m, scale_v, update_scale, found_inf)
        else:
            if params and (theta is not None or scale_m is not None):
                self._prestep([p.grad for p in params], exp_avgs, exp_avg_sqs, theta, scale_m, scale_v)
            self._adamw_step(update_scale)
        self.steps_since_reset += 1
        return loss

    def _adamw_step(self, update_scale: float) -> None:
        """torch's AdamW step with the update (not the decay) scaled: lr * f and weight_decay / f."""
        saved = [(g["lr"], g["weight_decay"]) for g in self.param_groups]
        for g in self.param_groups:
            g["lr"], g["weight_decay"] = g["lr"] * update_scale, g["weight_decay"] / update_scale
        try:
            super().step()
        finally:
            for g, (lr, wd) in zip(self.param_groups, saved, strict=True):
                g["lr"], g["weight_decay"] = lr, wd

    def _step_one_pass(self, theta, scale_m, scale_v, update_scale: float, found_inf) -> None:
        """spam_adamw_ per parameter group (each group has its own weight decay and maybe lr)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            state = [self.state[p] for p in params]
            self._lr.fill_(group["lr"])  # device writes, no host sync
            self._update_lr.fill_(group["lr"] * update_scale)
            beta1, beta2 = group["betas"]
            self._one_pass_step(
                params,
                [p.grad for p in params],
                [st["exp_avg"] for st in state],
                [st["exp_avg_sq"] for st in state],
                [st["step"] for st in state],
                self._lr,
                self._update_lr,
                beta1,
                beta2,
                group["eps"],
                group["weight_decay"],
                theta,
                scale_m,
                scale_v,
                found_inf,
            )

    def log_stats(self) -> dict:
        """Spikes detected so far and, with the clip on, the entries it changed in the last counted
        step (`spam_clipped`, only if that is the step just taken: the logged step under the
        trainer). Reads the device: call only when logging."""
        spikes, clipped = torch.stack([self.norm_stats[3].double(), self.clipped]).tolist()
        # never an older step's count
        counted = self.settings.spam_clip and self._counted_at == self.num_steps
        return {"spam_spikes": int(spikes), **({"spam_clipped": int(clipped)} if counted else {})}

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
