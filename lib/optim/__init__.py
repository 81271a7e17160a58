"""Optimizers: AdamW and AdamWSPAM, their settings and names (plain data, no torch) and their
builders (build.py, a registry from the Kconfig choice name to a builder; spam.py).

Every builder takes the model's parameter groups (decayed matrices, undecayed vectors) and the
OptimizerSettings, so runs that differ only in the optimizer differ in nothing else. AdamWPrune
is its base optimizer (AdamW or AdamWSPAM) whose states score the weights for state pruning; its
base, its variants and how bitter2 scales the run are lib/adamwprune's.
"""

from dataclasses import dataclass, field

from lib.fields import check, kc

# The optimizers, by the lower-cased Kconfig choice name; lib/optim/build.py builds each but
# AdamWPrune, which lib/adamwprune/build.py builds on one of the others.
OPTIMIZERS = ("adamw", "adamwspam", "adamwprune")


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerSettings:
    """The optimizer and its hyper-parameters (the learning rate lives in TrainingSettings)."""

    name: str = field(default="adamwspam", metadata=kc("OPTIMIZER", "--optimizer"))
    """A key of OPTIMIZERS."""
    beta1: float = field(default=0.9, metadata=kc("ADAMW_BETA1"))
    """Adam's first-moment decay, in [0, 1)."""
    beta2: float = field(default=0.95, metadata=kc("ADAMW_BETA2"))
    """Adam's second-moment decay, in [0, 1); GPT-2 uses 0.95."""
    eps: float = field(default=1e-8, metadata=kc("ADAMW_EPSILON"))
    """Added to sqrt(v) in Adam's denominator."""
    weight_decay: float = field(default=0.1, metadata=kc("ADAMW_WEIGHT_DECAY", "--weight-decay"))
    """Decoupled weight decay of the >= 2-D weights only (never biases or LayerNorm)."""
    spam_clip: bool = field(default=True, metadata=kc("SPAM_ENABLE_CLIP"))
    """SPAM's per-entry clipping of gradients against SPAM_THETA times Adam's second moment."""
    spam_theta: float = field(default=50.0, metadata=kc("SPAM_THETA"))
    """An entry is clipped when g^2 > theta * v: the seeds' 50; the SPAM paper and code use 5000."""
    spam_clip_grace_steps: int = field(default=20, metadata=kc("SPAM_CLIP_GRACE_STEPS"))
    """No clipping in the first this many steps of the run and of each reset window (SPAM's code: 20)."""
    spam_spike_threshold: float = field(default=2.0, metadata=kc("SPAM_SPIKE_THRESHOLD"))
    """z-score of the gradient norm above which a step is a spike; 0 turns detection off."""
    spam_periodic_reset: bool = field(default=True, metadata=kc("SPAM_PERIODIC_RESET"))
    """Zero both Adam moments every spam_interval optimizer steps."""
    spam_interval: int = field(default=1000, metadata=kc("SPAM_INTERVAL"))
    """Optimizer steps between SPAM's periodic resets of the moments."""
    spam_reset_bias_correction: bool = field(default=False, metadata=kc("SPAM_RESET_BIAS_CORRECTION"))
    """A periodic reset also zeroes Adam's step counts (bias correction restarts); SPAM's code keeps them."""
    spam_warmup: bool = field(default=True, metadata=kc("SPAM_WARMUP"))
    """Ramp Adam's update back up (a half cosine) after each periodic reset."""
    spam_warmup_steps: int = field(default=100, metadata=kc("SPAM_WARMUP_STEPS"))
    """Optimizer steps of that ramp (SPAM's warm-up, not the learning rate's)."""
    spam_warmup_start: float = field(default=0.01, metadata=kc("SPAM_WARMUP_START_FACTOR"))
    """The update's scale on the first step after a reset, rising to 1 along a half cosine."""

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
