"""A sweep file: a small TOML file of values per setting, read and checked against the settings
tree (lib/study/sweep.py crosses them with the matrix).

    # defconfigs/gpt2-tiny-cpu.sweep.toml
    metric = "final_val_ppl"              # what the leaderboard ranks (lower is better)
    [values]
    LEARNING_RATE = [3e-4, 6e-4, 1e-3]    # a list ...
    GPT2_WARMUP_STEPS = { start = 50, stop = 200, num = 3 }              # ... or a range
    SPAM_THETA = { start = 10.0, stop = 100.0, num = 3, log = true }

Keys are Kconfig symbols (LEARNING_RATE, CONFIG_LEARNING_RATE) or settings paths
(training.learning_rate). Every combination of the values is crossed with the
base configuration's matrix (one run, or the selected optimizers and pruners),
and each run differs from the base only in its matrix entry and swept values.
"""

import math
import sys
from pathlib import Path
from typing import Any

from lib.config.kconfig import out_of_range
from lib.study.sweep import MAX_RUNS, METRICS, SWEEP_SUFFIX, Sweep
from lib.train.settings import SettingsError, setting_path, setting_value, symbol_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _range(spec: dict, where: str) -> list[float]:
    unknown = set(spec) - RANGE_KEYS
    if unknown or not {"start", "stop", "num"} <= set(spec):
        raise SettingsError(f"{where}: a range is {{ start = A, stop = B, num = N[, log = true] }}")
    start, stop, num, log = spec["start"], spec["stop"], spec["num"], spec.get("log", False)
    if not isinstance(num, int) or num < 2:
        raise SettingsError(f"{where}: num = {num!r}; a range needs num >= 2 (a list takes one value)")
    if log and (start <= 0 or stop <= 0):
        raise SettingsError(f"{where}: a log range needs start and stop > 0")
    if log:
        return [
            math.exp(math.log(start) + i * (math.log(stop) - math.log(start)) / (num - 1)) for i in range(num)
        ]
    values = [start + i * (stop - start) / (num - 1) for i in range(num)]
    if all(isinstance(v, int) for v in (start, stop)) and all(float(v).is_integer() for v in values):
        return [int(v) for v in values]
    return values


RANGE_KEYS = {"start", "stop", "num", "log"}


def _flatten(table: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(key, spec) pairs; TOML reads a bare training.lr_warmup_steps = ... as nested tables."""
    out = []
    for key, spec in table.items():
        if isinstance(spec, dict) and not set(spec) <= RANGE_KEYS:
            out += _flatten(spec, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", spec))
    return out


def parse_sweep(text: str, source: str = "sweep") -> Sweep:
    """A Sweep from TOML text; errors name the file, the key and what is allowed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{source}: not valid TOML ({e})") from None
    unknown = set(data) - {"values", "metric"}
    if unknown:
        raise SettingsError(
            f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; use [values] and metric"
        )
    metric = data.get("metric", "final_val_ppl")
    if metric not in METRICS:
        raise SettingsError(f"{source}: metric = {metric!r}; choose one of {', '.join(METRICS)}")
    table = data.get("values")
    if not isinstance(table, dict) or not table:
        raise SettingsError(f"{source}: needs a [values] table with at least one setting")
    values: dict[str, list[Any]] = {}
    for key, spec in _flatten(table):
        where = f"{source}: {key}"
        path = setting_path(key)
        if path in values:
            raise SettingsError(f"{where}: {path} is swept twice")
        if path.startswith("matrix."):
            raise SettingsError(f"{where}: the test matrix's own selection cannot be swept")
        raw = _range(spec, where) if isinstance(spec, dict) else spec
        if not isinstance(raw, list) or not raw:
            raise SettingsError(f"{where}: give a non-empty list of values or a range table")
        values[path] = [setting_value(path, v) for v in raw]
        if bad := [v for v in values[path] if out_of_range({symbol_of(path): v})]:
            allowed = out_of_range({symbol_of(path): bad[0]})[symbol_of(path)]
            raise SettingsError(f"{where}: {', '.join(map(str, bad))} out of range: Kconfig allows {allowed}")
        twice = sorted({repr(v) for v in values[path] if values[path].count(v) > 1})
        if twice:
            raise SettingsError(f"{where}: {', '.join(twice)} given more than once; each value runs once")
    sweep = Sweep(values, metric)
    if len(sweep.combinations()) > MAX_RUNS:
        raise SettingsError(f"{source}: {len(sweep.combinations())} combinations; at most {MAX_RUNS}")
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    """parse_sweep of a file; a missing file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"sweep file {path} does not exist (e.g. defconfigs/<name>{SWEEP_SUFFIX})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SettingsError(
            f"sweep file {path} is not UTF-8 text (byte {e.start}); TOML files are UTF-8"
        ) from None
    return parse_sweep(text, str(path))
