"""The runtime's own settings: device, precision, compilation, seed, processes and where records go.

Their choices (COMPILE_MODES, ATTENTION_BACKENDS, the FP8 tables) are plain data in options.py, so
checking them needs no torch; device.py and distributed.py act on them."""

from dataclasses import dataclass, field

from lib.fields import check, kc
from lib.runtime.options import ATTENTION_BACKENDS, COMPILE_MODES, FP8_LAYERS, FP8_RECIPES


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeSettings:
    """Device, precision, compilation, seed and where records go."""

    device: str = field(default="auto", metadata=kc("DEVICE", "--device"))
    """auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."""
    mixed_precision: bool = field(default=True, metadata=kc("MIXED_PRECISION"))
    """Matrix multiplies in amp_dtype with fp32 master weights (GPUs; a CPU stays fp32)."""
    amp_dtype: str = field(default="bfloat16", metadata=kc("GPT2_AMP_DTYPE"))
    """bfloat16, or float16 (which turns on a gradient scaler)."""
    tf32: bool = field(default=True, metadata=kc("GPT2_TF32_ALLOWED"))
    """Let fp32 matrix multiplies use TF32 tensor cores (NVIDIA Ampere and newer)."""
    compile: bool = field(default=True, metadata=kc("GPT2_COMPILE", "--compile", resumable=True))
    """torch.compile the model (and AdamWSPAM's step) on CUDA; ignored on CPU and MPS."""
    compile_mode: str = field(
        default="default", metadata=kc("GPT2_COMPILE_MODE", "--compile-mode", resumable=True)
    )
    """A key of COMPILE_MODES (torch.compile's mode)."""
    attention_backend: str = field(
        default="auto", metadata=kc("GPT2_ATTENTION_BACKEND", "--attention-backend", resumable=True)
    )
    """A key of ATTENTION_BACKENDS."""
    fp8: bool = field(default=False, metadata=kc("GPT2_FP8", "--fp8"))
    """Linear layers' matrix multiplies in float8 through torchao (fp8_recipe, fp8_layers)."""
    fp8_recipe: str = field(default="tensorwise", metadata=kc("GPT2_FP8_RECIPE", "--fp8-recipe"))
    """A key of FP8_RECIPES."""
    fp8_layers: str = field(default="all", metadata=kc("GPT2_FP8_LAYERS", "--fp8-layers"))
    """A key of FP8_LAYERS."""
    nproc_per_node: int = field(
        default=1, metadata=kc("GPT2_NPROC_PER_NODE", "--nproc-per-node", resumable=True)
    )
    """Processes (one per GPU) one run spans on this host; more than 1 runs under torchrun (DDP)."""
    memory_check: bool = field(
        default=True, metadata=kc("GPT2_MEMORY_CHECK", "--memory-check", resumable=True)
    )
    """Refuse, before it starts, a run whose estimated peak GPU memory does not fit (gpt2/memory.py)."""
    seed: int = field(default=1337, metadata=kc("SEED", "--seed"))
    """Seeds initialisation and batch sampling; runs compared with each other share it."""
    output_dir: str = field(default="runs", metadata=kc("OUTPUT_DIR", resumable=True))
    """Runs are written to <output_dir>/<run name>/."""
    run_name: str = field(default="", metadata=kc("GPT2_RUN_NAME", "--run-name", resumable=True))
    """The run folder's name; empty: the matrix's name for it plus a time stamp."""

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda", "mps") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        check(self, "device", ok, "auto, cpu, cuda, cuda:N or mps")
        check(self, "amp_dtype", self.amp_dtype in ("bfloat16", "float16"), "bfloat16 or float16")
        check(self, "compile_mode", self.compile_mode in COMPILE_MODES, f"one of {', '.join(COMPILE_MODES)}")
        check(
            self,
            "attention_backend",
            self.attention_backend in ATTENTION_BACKENDS,
            f"one of {', '.join(ATTENTION_BACKENDS)}",
        )
        check(self, "fp8_recipe", self.fp8_recipe in FP8_RECIPES, f"one of {', '.join(FP8_RECIPES)}")
        check(self, "fp8_layers", self.fp8_layers in FP8_LAYERS, f"one of {', '.join(FP8_LAYERS)}")
        check(self, "nproc_per_node", 1 <= self.nproc_per_node <= 64, "1..64")
        check(self, "seed", 0 <= self.seed < 2**31, "0..2147483647")
        check(self, "output_dir", self.output_dir != "", "a non-empty path")
        check(
            self,
            "run_name",
            "/" not in self.run_name and self.run_name not in (".", "..") and self.run_name.isprintable(),
            "a folder name without '/' or control characters (newline, NUL, ...)",
        )

    @property
    def dtype(self) -> str:
        """The autocast dtype name, or 'float32' without mixed precision."""
        return self.amp_dtype if self.mixed_precision else "float32"
