"""The command line's side of the settings: one flag per field that names one, plus --dtype and --set.

gpt2/train.py's flags are generated here from the settings' field metadata, so a
flag always names the Kconfig symbol it overrides; the test-matrix runner turns
a run's overrides back into flags (cli_flag, set_flag).
"""

import argparse
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from lib.adamwprune import BASES, VARIANTS
from lib.config.kconfig import config_with_lines, kconfig_symbol, out_of_range
from lib.optim import OPTIMIZERS
from lib.pruning import METHODS
from lib.runtime.options import ATTENTION_BACKENDS, COMPILE_MODES, FP8_LAYERS, FP8_RECIPES
from lib.train.settings import (
    DATASETS,
    DTYPES,
    MODEL_NAMES,
    SECTIONS,
    SettingsError,
    field_default,
    field_path,
    setting_path,
    setting_value,
    settings_field,
    symbol_of,
)


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """Add one CLI flag per field that names a flag in its metadata, plus --dtype."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            flag = f.metadata.get("flag")
            if flag is None:
                continue
            dest = f"{section}.{f.name}"
            aliases = f.metadata.get("aliases", ())  # older names of the flag
            help_ = f"overrides CONFIG_{f.metadata['kconfig']}"
            if f.type in (bool, "bool"):
                parser.add_argument(
                    flag, *aliases, dest=dest, action=argparse.BooleanOptionalAction, help=help_
                )
            else:
                typ: Callable = {"int": int, "float": float, "str": str}.get(f.type, f.type)
                choices = _FLAG_CHOICES.get(dest)
                parser.add_argument(flag, *aliases, dest=dest, type=typ, choices=choices, help=help_)
    parser.add_argument(
        "--dtype",
        dest="runtime.dtype",
        choices=sorted(DTYPES),
        help="overrides CONFIG_MIXED_PRECISION and CONFIG_GPT2_AMP_DTYPE",
    )
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="SYMBOL=VALUE",
        help="override any setting, flag or not: --set SPAM_THETA=25 (Kconfig symbol or settings path)",
    )


_FLAG_CHOICES = {
    "model.name": MODEL_NAMES,
    "data.dataset": DATASETS,
    "optimizer.name": tuple(OPTIMIZERS),
    "pruning.method": METHODS,
    "adamwprune.variant": tuple(VARIANTS),
    "adamwprune.base": BASES,
    "runtime.compile_mode": COMPILE_MODES,
    "training.batch_mode": ("manual", "auto"),
    "runtime.attention_backend": tuple(ATTENTION_BACKENDS),
    "runtime.fp8_recipe": FP8_RECIPES,
    "runtime.fp8_layers": tuple(FP8_LAYERS),
}


def cli_flag(path: str) -> str:
    """The command-line flag of a dotted settings path ("training.batch_size" -> "--batch-size")."""
    flag = settings_field(path).metadata.get("flag")
    if flag is None:
        raise SettingsError(f"setting {path!r} has no command-line flag")
    return flag


def overrides_from_args(
    args: argparse.Namespace, config: Callable[[], Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The dotted-path overrides the user actually passed (flags left unset are skipped).

    `--set SYMBOL=VALUE` takes any line a defconfig takes: a settings field's symbol or path is
    set directly; any other Kconfig symbol, and every choice entry (GPT2_MODEL_124M, a mode), is
    applied as a defconfig line over `config()` (config.py's dict, with the flags on top), as
    strictly, and the settings it changes become overrides. Raises SettingsError or
    DefconfigError (both Refusals) for a malformed, unknown or inapplicable --set.
    """
    out = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    if (dtype := out.pop("runtime.dtype", None)) is not None:
        out["runtime.mixed_precision"], out["runtime.amp_dtype"] = DTYPES[dtype]
    kconfig_lines = []
    for item in getattr(args, "set_values", []):
        name, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"--set {item!r}: write SYMBOL=VALUE, e.g. --set LEARNING_RATE=3e-4")
        name = name.strip()
        if (path := field_path(name)) is not None and not kconfig_symbol(name, choice_entry=True):
            out[path] = setting_value(path, value)
        elif kconfig_symbol(name):
            kconfig_lines.append(item)
        else:
            setting_path(name)  # raises, naming the close matches
    ranged = {symbol_of(path): value for path, value in out.items()}
    if bad := out_of_range(ranged):
        raise SettingsError(
            "; ".join(
                f"{cli_flag_or_set(field_path(k))} {ranged[k]} is out of range: Kconfig allows {r} (CONFIG_{k})"
                for k, r in bad.items()
            )
        )
    if kconfig_lines:
        if config is None:
            raise SettingsError(f"--set {kconfig_lines[0]!r} needs the configuration it applies to")
        given = dict(out)
        before = {**config(), **{symbol_of(path): value for path, value in given.items()}}
        for symbol, value in config_with_lines(before, kconfig_lines).items():
            if (path := field_path(symbol)) is None:
                continue  # a choice entry itself: the string derived from it is the setting
            value = field_default(path) if value is None else setting_value(path, value)
            if value == (setting_value(path, before[symbol]) if symbol in before else field_default(path)):
                continue  # an option the line made visible again, at the value it already had
            if path in given and given[path] != value:
                raise SettingsError(
                    f"--set {' '.join(kconfig_lines)} makes {path} {value!r}, but {cli_flag_or_set(path)} "
                    f"asks for {given[path]!r}; keep one of the two"
                )
            out[path] = value
    return out


def cli_flag_or_set(path: str) -> str:
    """How a setting was given on the command line, for messages: its flag, else --set PATH."""
    return settings_field(path).metadata.get("flag") or f"--set {path}"


def set_flag(path: str, value: Any) -> list[str]:
    """The --set arguments that give setting `path` this value on gpt2/train.py's command line."""
    text = (
        ("y" if value else "n")
        if isinstance(value, bool)
        else repr(value)
        if isinstance(value, float)
        else str(value)
    )
    return ["--set", f"{path}={text}"]
