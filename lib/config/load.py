"""The Kconfig loader's last step: the generated config.py, read as data, into the settings tree
(lib/train/settings.py), range-checked against the Kconfig that made it."""

import ast
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from lib.config.kconfig import kconfig_symbol, out_of_range
from lib.fields import SettingsError
from lib.train.settings import SECTIONS, Settings, typed_value


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Build Settings from config.py's CONFIG dict; symbols that are absent keep their defaults."""
    sections = {}
    for section, cls in SECTIONS.items():
        kwargs = {}
        for f in fields(cls):
            symbol = f.metadata["kconfig"]
            if symbol in config:
                kwargs[f.name] = typed_value(config[symbol], f.type, f"CONFIG_{symbol}")
        sections[section] = cls(**kwargs)
    return Settings(**sections)


def read_config_py(path: str | Path) -> dict[str, Any]:
    """Read config.py as data: one `CONFIG = {...}` literal, evaluated by ast.literal_eval."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(
            f"{path} does not exist. Generate it with `make defconfig-<name>` "
            "(see `make list-defconfigs`) or `make menuconfig`, then `make`."
        )
    bad = (
        f"{path} is not a generated config file; regenerate it (make defconfig-<name> or make menuconfig, "
        "which write config.py)"
    )
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except UnicodeDecodeError as e:
        raise SettingsError(f"{bad} (byte {e.start} is not UTF-8)") from None
    except SyntaxError as e:
        raise SettingsError(f"{bad} ({e.msg}, line {e.lineno})") from None
    body = tree.body
    if (
        len(body) != 1
        or not isinstance(body[0], ast.Assign)
        or [getattr(t, "id", None) for t in body[0].targets] != ["CONFIG"]
    ):
        raise SettingsError(f"{bad} (expected exactly one `CONFIG = {{...}}` assignment)")
    try:
        config = ast.literal_eval(body[0].value)
    except ValueError:
        raise SettingsError(f"{bad} (CONFIG holds something other than literals)") from None
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise SettingsError(f"{bad} (CONFIG is not a dict of symbol names)")
    keys = [k.value for k in body[0].value.keys if isinstance(k, ast.Constant)]
    if twice := sorted({k for k in keys if keys.count(k) > 1}):
        raise SettingsError(f"{bad} (it sets {', '.join(twice)} more than once; a dict keeps only the last)")
    if unknown := sorted(k for k in config if not kconfig_symbol(k)):
        raise SettingsError(
            f"{bad} (no Kconfig option is named {', '.join(unknown)}: a typo would be ignored)"
        )
    return config


def load_settings(
    config_py: str | Path = "config.py", overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from config.py, then CLI-style dotted-path overrides, validated once."""
    config = read_config_py(config_py)
    if bad := out_of_range(config):
        raise SettingsError(
            f"{config_py}: "
            + "; ".join(
                f"CONFIG_{k} = {config[k]} is out of range (Kconfig allows {r})" for k, r in bad.items()
            )
            + ". It was edited by hand or made by another Kconfig: regenerate it (make menuconfig, or make "
            "defconfig-<name>)"
        )
    settings = settings_from_config(config)
    return settings.replace(overrides) if overrides else settings
