"""Kconfig glue for the Makefile: strict defconfig loading and config.py generation.

    python -m scripts.kconfig defconfig defconfigs/gpt2-tiny-cpu   # -> .config + config.py
    python -m scripts.kconfig genconfig                            # .config -> config.py
    python -m scripts.kconfig list                                 # named defconfigs

menuconfig, savedefconfig, olddefconfig and listnewconfig are kconfiglib's own
tools; the Makefile calls them directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.config.kconfig import DefconfigError, apply_config, config_values, load_kconfig, write_outputs
from lib.config.load import settings_from_config
from lib.train.settings import SettingsError


def _describe(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# CONFIG_") and line[1:].strip():
            return line[1:].strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kconfig", default="Kconfig", help="top Kconfig file (default: Kconfig)")
    p.add_argument("--config", default=".config", help="the .config to write or read")
    p.add_argument("--config-py", default="config.py", help="the config.py to generate")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("defconfig", help="load a defconfig strictly into .config and config.py")
    d.add_argument("defconfig", help="a path, or a name in defconfigs/")
    sub.add_parser("genconfig", help="load .config strictly and regenerate config.py")
    ls = sub.add_parser("list", help="list the defconfigs with their first comment line")
    ls.add_argument("--dir", default="defconfigs")
    args = p.parse_args(argv)

    if args.cmd == "list":
        for path in sorted(Path(args.dir).iterdir()):
            if path.is_file() and not path.name.endswith(".sweep.toml"):
                print(f"  defconfig-{path.name:<40} {_describe(path)}")
        return 0

    if args.cmd == "defconfig":
        src = Path(args.defconfig)
        if not src.exists() and (Path("defconfigs") / src).exists():
            src = Path("defconfigs") / src
        if not src.is_file():
            names = " ".join(sorted(f.name for f in Path("defconfigs").glob("*") if f.suffix != ".toml"))
            print(
                f"error: no defconfig {args.defconfig!r}. Known: {names}",
                file=sys.stderr,
            )
            return 2
    else:
        src = Path(args.config)
        if not src.is_file():
            print(
                f"error: {src} does not exist. Create it with make defconfig-<name> "
                "(make list-defconfigs) or make menuconfig.",
                file=sys.stderr,
            )
            return 2

    kconf = load_kconfig(args.kconfig)
    try:
        apply_config(kconf, src)
    except DefconfigError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.cmd == "genconfig":
            print(
                "hint: if Kconfig changed since this .config was written, "
                "`make olddefconfig` brings it up to date.",
                file=sys.stderr,
            )
        return 1
    try:  # what Kconfig cannot say (a float that is not a number, a minimum above its maximum)
        settings_from_config(config_values(kconf))
    except SettingsError as e:
        print(f"error: {src}: every line applied, but the settings refuse it: {e}", file=sys.stderr)
        return 1
    write_outputs(kconf, Path(args.config), Path(args.config_py))
    if args.cmd == "defconfig":
        print(f"{src} -> {args.config}, {args.config_py} (every line applied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
