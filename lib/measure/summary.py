"""RunSummary: one run's summary.json, the record that train writes and the report and results read.

Plain data (no torch). Every key is a field here, with its meaning; a summary written by an
older version reads back with the fields it lacks left at their defaults (None: not measured).
"""

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lib.io import atomic_write_json

FINISHED = ("completed", "time_budget")
STATUSES = (*FINISHED, "interrupted", "diverged", "out_of_memory")


@dataclass(kw_only=True)
class RunSummary:
    """What a run did, what it reached, what it cost and how it was set up."""

    run: str
    status: str
    """One of STATUSES; completed and time_budget are finished runs."""
    # Speed: the steady state (logged intervals after the first in which nothing compiled).
    ms_per_iter: float | None = None
    tokens_per_sec: float | None = None
    mfu: float | None = None
    # Progress.
    iters: int = 0
    planned_iters: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    wall_seconds_this_session: float = 0.0
    # Results: the last evaluation, and the best.
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    final_val_ppl: float | None = None
    model_sparsity: float | None = None
    best_val_loss: float | None = None
    best_checkpoint: str | None = None
    # Memory: the peak over every session of the run, and the estimate made before it started.
    peak_memory_bytes: int | None = None
    memory_estimate: dict | None = None
    # What optimizer and pruner keep (lib/measure/metrics.bookkeeping); sparsity measured on the weights.
    optimizer_state_bytes: int | None = None
    param_bytes: int | None = None
    sparsity: float | None = None
    prunable_weights: int | None = None
    prunable_weight_bytes: int | None = None
    prunable_optimizer_state_bytes: int | None = None
    pruning_state_bytes: int | None = None
    mask_bytes: int | None = None
    pruning_state_per_weight_byte: float | None = None
    training_bytes_per_weight_byte: float | None = None
    # Set-up.
    scaling: dict | None = None
    """What bitter2 scaled (setting, factor, from, to), if anything."""
    num_params: int | None = None
    attention: dict | None = None
    model: str | None = None
    dataset: str | None = None
    data: dict | None = None
    """The token files' meta.json: source, sha256s, token counts."""
    optimizer: str | None = None
    pruning_method: str | None = None
    adamwprune_variant: str | None = None
    adamwprune_base: str | None = None
    target_sparsity: float | None = None
    seed: int | None = None
    device: str | None = None
    world_size: int | None = None
    global_batch: int | None = None
    dtype: str | None = None
    compiled: bool | None = None
    batch_sizing: dict | None = None
    init_from: dict | None = None
    lora: dict | None = None
    # Measured beside and after training.
    gpu: dict | None = None
    inference: dict | None = None
    lm_eval: dict | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "RunSummary":
        """A summary from its JSON; keys this version does not know are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    @classmethod
    def read(cls, path: Path) -> "RunSummary":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> "RunSummary":
        return dataclasses.replace(self, **changes)


def summary_status(run_dir: Path) -> str | None:
    """The status summary.json records in a run folder; None without a readable one."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
