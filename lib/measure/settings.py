"""The settings of measurement after and during training, as plain data (no torch)."""

from dataclasses import dataclass, field

from lib.fields import check, kc


@dataclass(frozen=True, kw_only=True, slots=True)
class DownstreamSettings:
    """After training: lm-evaluation-harness tasks on the final model."""

    enabled: bool = field(default=False, metadata=kc("GPT2_LM_EVAL", "--lm-eval", resumable=True))
    """After training, lm-evaluation-harness tasks on the final model."""
    tasks: str = field(
        default="hellaswag,lambada_openai",
        metadata=kc("GPT2_LM_EVAL_TASKS", "--lm-eval-tasks", resumable=True),
    )
    """Comma-separated harness task names."""
    limit: int = field(default=0, metadata=kc("GPT2_LM_EVAL_LIMIT", resumable=True))
    """Examples per task (0: all)."""
    include_path: str = field(default="", metadata=kc("GPT2_LM_EVAL_INCLUDE_PATH", resumable=True))
    """A folder of extra task YAML files."""
    batch_size: int = field(default=8, metadata=kc("GPT2_LM_EVAL_BATCH_SIZE", resumable=True))
    """Continuations scored together."""

    def __post_init__(self) -> None:
        names = [t.strip() for t in self.tasks.split(",") if t.strip()]
        check(self, "tasks", bool(names), 'comma-separated task names, e.g. "hellaswag,lambada_openai"')
        check(self, "limit", self.limit >= 0, "0 (all) or more")
        check(self, "batch_size", 1 <= self.batch_size <= 1024, "1..1024")

    @property
    def task_names(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


@dataclass(frozen=True, kw_only=True, slots=True)
class MonitorSettings:
    """Background sampling of the GPU while a run trains."""

    enabled: bool = field(default=True, metadata=kc("GPT2_GPU_MONITOR", "--gpu-monitor", resumable=True))
    """Sample the GPU through NVML while training (gpu.jsonl, gpu.png, the summary's means and energy)."""
    interval_seconds: int = field(default=5, metadata=kc("GPT2_GPU_MONITOR_INTERVAL", resumable=True))
    """Seconds between samples."""

    def __post_init__(self) -> None:
        check(self, "interval_seconds", 1 <= self.interval_seconds <= 3600, "1..3600 seconds")


def _int_list(text: str) -> list[int] | None:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        return None
    return values if values and all(v >= 1 for v in values) else None


@dataclass(frozen=True, kw_only=True, slots=True)
class InferenceSettings:
    """After training: time the final model's forward passes (lib/measure/inference.py)."""

    enabled: bool = field(default=False, metadata=kc("GPT2_LATENCY", "--latency", resumable=True))
    """After training, time prefill and cached decode steps of the final model."""
    seq_lens: str = field(default="512,1024", metadata=kc("GPT2_LATENCY_SEQ_LENS", resumable=True))
    """Comma-separated sequence lengths; those above the block size are skipped."""
    batch_sizes: str = field(default="1,8", metadata=kc("GPT2_LATENCY_BATCH_SIZES", resumable=True))
    """Batch sizes timed, comma-separated."""
    repeats: int = field(default=20, metadata=kc("GPT2_LATENCY_REPEATS", resumable=True))
    """Timed repeats per shape, after 3 untimed ones."""

    def __post_init__(self) -> None:
        check(self, "seq_lens", _int_list(self.seq_lens) is not None, 'positive integers, e.g. "512,1024"')
        check(self, "batch_sizes", _int_list(self.batch_sizes) is not None, 'positive integers, e.g. "1,8"')
        check(self, "repeats", 3 <= self.repeats <= 10_000, "3..10000")

    def shapes(self, block_size: int) -> list[tuple[int, int]]:
        """(batch, sequence length) pairs to time, lengths capped at the block size (deduplicated)."""
        lens = sorted({min(t, block_size) for t in _int_list(self.seq_lens)})
        return [(b, t) for b in _int_list(self.batch_sizes) for t in lens]
