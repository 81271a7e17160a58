"""Turn a seed-project defconfig into one of ours (lib/config/migrate.py), with a line-by-line report.

    python -m scripts.migrate_defconfig path/to/seed/defconfig [--out defconfigs/my-name]
    make migrate-defconfig FROM=path/to/seed/defconfig [TO=defconfigs/my-name]

Every line is mapped (converted where units or spellings differ), or listed as dropped with the
reason; agreeing duplicates are one setting, conflicting ones are refused. The result loads
strictly (`make defconfig-<name>`); the report goes to stdout and into the file as comments.
"""

import argparse
import sys
from pathlib import Path

from lib.config.migrate import MigrationError, migrate

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="the seed project's defconfig")
    p.add_argument("--out", type=Path, help="where to write ours (default: defconfigs/<name>-migrated)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    if not args.source.is_file():
        print(
            f"error: {args.source}: no such file (FROM= names the seed project's defconfig)", file=sys.stderr
        )
        return 2
    out = args.out or ROOT / "defconfigs" / f"{args.source.name}-migrated"
    if out.exists() and not args.force:
        print(f"error: {out} exists; choose another TO= (--out) or pass --force", file=sys.stderr)
        return 2
    try:
        m = migrate(args.source, ROOT / "Kconfig")
    except MigrationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(m.report())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(m.text())
    name = out.name if out.parent.resolve() == (ROOT / "defconfigs").resolve() else None
    print(
        f"wrote {out}"
        + (f": make defconfig-{name} loads it" if name else ": make defconfig-... loads it from defconfigs/")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
