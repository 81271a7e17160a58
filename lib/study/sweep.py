"""Hyperparameter sweeps: the swept values of a sweep file (lib/config/sweep.py reads it),
crossed with the matrix's runs; each run's name part for its values.

Every combination of the values is crossed with the base configuration's matrix (one run, or the
selected optimizers and pruners), and each run differs from the base only in its matrix entry and
swept values.
"""

import itertools
from dataclasses import dataclass
from typing import Any

from lib.fields import SettingsError

SWEEP_SUFFIX = ".sweep.toml"
METRICS = ("final_val_ppl", "final_val_loss", "train_seconds", "tokens_per_sec", "peak_memory_gib")
MAX_RUNS = 1000


@dataclass(frozen=True)
class Sweep:
    """The swept settings (dotted path -> values, in file order) and the leaderboard's metric."""

    values: dict[str, list[Any]]
    metric: str = "final_val_ppl"

    def combinations(self) -> list[dict[str, Any]]:
        """Every assignment of one value to each swept setting."""
        paths = list(self.values)
        return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*self.values.values())]


def check_combinations(base: Any, sweep: Sweep) -> None:
    """Validate every combination against the base settings (a Settings) now, before any run starts."""
    for combo in sweep.combinations():
        try:
            base.replace(combo)
        except SettingsError as e:
            shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
            raise SettingsError(f"the sweep combination {shown} is not valid: {e}") from None


def label(path: str, value: Any) -> str:
    """A run-name part for one swept value, exact: learning_rate=0.0015 -> 'learning_rate0.0015'
    (a float by its shortest repr that reads back as the same number, so two values never share
    a name)."""
    name = path.split(".")[-1]
    if isinstance(value, bool):
        text = "y" if value else "n"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{name}{text}".replace("/", "-").replace(" ", "")
