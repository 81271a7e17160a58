"""Draw docs/architecture.md's house from the code: the floors of lib/ (lib.FLOORS, top floor first),
each folder's summary (the first paragraph of its package docstring) and its modules.

    python -m scripts.architecture            # rewrite the picture in docs/architecture.md
    python -m scripts.architecture --check    # exit 1 if the picture differs from the code

The picture is the fenced block after the "## The house" heading; `--check` runs in the tests, so
a folder added, moved to another floor or described anew shows in the document or fails them.
"""

import argparse
import ast
import sys
import textwrap
from pathlib import Path

import lib as lib_floors

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
WIDTH = 108
INDENT = 22  # where a folder's text starts


def summary(package: Path) -> str:
    """The first paragraph of a package's docstring, on one line."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def modules(package: Path) -> str:
    """The package's modules and sub-folders, by name."""
    names = sorted(p.stem for p in package.glob("*.py") if p.name != "__init__.py")
    return ", ".join(names)


def block(head: str, text: str, rail: str) -> list[str]:
    """`head` then `text` wrapped beside it from column INDENT; continuation lines start with `rail`."""
    lines = textwrap.wrap(text, WIDTH - INDENT) or [""]
    first = head.ljust(INDENT - 1) + " " + lines[0]
    return [first.rstrip()] + [(rail.ljust(INDENT) + line).rstrip() for line in lines[1:]]


def picture() -> str:
    lines = []
    for top in ("scripts", "gpt2"):
        package = ROOT / top
        lines += block(f" {top}/", summary(package), "")
        lines += block("", f"[{modules(package)}]", "")
        lines.append("    |")
    lib = ROOT / "lib"
    lines += block(" lib/", "the machinery, one concern per folder, in floors (top floor first)", "    |")
    for floor in reversed(lib_floors.FLOORS):
        if len(floor) == 1:
            name = floor[0]
            lines += block(f"    |--- {name}/", summary(lib / name), "    |")
            lines += block("    |", f"[{modules(lib / name)}]", "    |")
            continue
        heads = " ".join(f"{n}/" for n in floor)
        lines.append(f"    |--- {heads}   side by side, none importing another:")
        for name in floor:
            lines += block(f"    |      {name}/", summary(lib / name), "    |")
            lines += block("    |", f"[{modules(lib / name)}]", "    |")
    own = sorted(p.name for p in lib.glob("*.py") if p.name != "__init__.py")
    lines.append("    `--- " + ", ".join(own) + " and lib/__init__.py (FLOORS)")
    return "\n".join(lines) + "\n"


def with_picture(text: str) -> str:
    """The document with its house replaced by the picture of the code."""
    before, after = text.split("## The house", 1)
    head, rest = after.split("```\n", 1)
    _, tail = rest.split("```\n", 1)
    return before + "## The house" + head + "```\n" + picture() + "```\n" + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = p.parse_args(argv)
    text = DOC.read_text()
    new = with_picture(text)
    if args.check:
        if new != text:
            print(
                f"{DOC}: the house differs from the code; run python -m scripts.architecture", file=sys.stderr
            )
            return 1
        print(f"{DOC}: the house matches the code")
        return 0
    DOC.write_text(new)
    print(f"{DOC}: the house redrawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
