"""Regenerate the tables of docs/results.md from the results folders kept under docs/results/.

    python -m scripts.results            # rebuild each folder's report, then the tables in results.md
    python -m scripts.results --check    # exit 1 if results.md differs from what the folders give

A table in the document is a block

    <!-- results: FOLDER runs|seeds -->
    <!-- results: FOLDER paired REFERENCE -->
    ...
    <!-- /results -->

whose body is replaced by the per-run table ("runs"), the across-seeds table ("seeds"), or each
combination's seed-paired perplexity difference from REFERENCE with its 95% interval ("paired") of
docs/results/FOLDER, as lib/report.py computes them. So every number in those tables comes from the
run summaries, and `--check` (run by the tests) catches a table edited by hand or a summary changed
without the document.
"""

import argparse
import re
import sys
from pathlib import Path

from lib.report import (
    PAIRED_COLUMNS,
    PLAN_FILE,
    SEED_COLUMNS,
    collect,
    columns,
    markdown_table,
    paired_differences,
    seed_groups,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"
BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<folder>[\w.-]+) (?P<kind>runs|seeds|paired)(?: (?P<ref>[\w.-]+))? -->\n)"
    r"(?P<body>.*?)(?P<close><!-- /results -->)",
    re.S,
)
RUN_COLUMNS = columns(
    "run",
    "final_val_ppl",
    "final_val_loss",
    "sparsity",
    "iters",
    "tokens",
    "train_seconds",
    "ms_per_iter",
    "tokens_per_sec",
    "peak_memory_gib",
    "state_per_weight",
    "energy_wh",
)


def table(folder: Path, kind: str, reference: str | None = None) -> str:
    """The markdown table of one results folder: every run, each combination across its seeds, or
    each combination's seed-paired difference from `reference`."""
    if not (folder / PLAN_FILE).is_file():
        raise SystemExit(f"error: {folder} is not a test matrix results folder (no {PLAN_FILE})")
    rows = collect(folder)
    if kind == "paired":
        try:
            lines = markdown_table(paired_differences(rows, reference or ""), PAIRED_COLUMNS)
        except ValueError as e:
            raise SystemExit(f"error: {folder}: {e}") from None
    elif kind == "seeds":
        groups = seed_groups(rows)
        lines = markdown_table(groups, SEED_COLUMNS, bold=groups[0]["combination"] if groups else None)
    else:
        done = [r for r in rows if r["final_val_ppl"] is not None]
        lines = markdown_table(done, RUN_COLUMNS, bold=done[0]["run"] if done else None)
    return "\n".join(lines) + "\n"


def render(text: str, results_root: Path) -> str:
    """`text` with every results block's body replaced by its table."""

    def replace(m: re.Match) -> str:
        return m["open"] + table(results_root / m["folder"], m["kind"], m["ref"]) + m["close"]

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--results", type=Path, default=DOC.parent / "results", help="folder of results folders")
    p.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = p.parse_args(argv)
    text = args.doc.read_text()
    if not BLOCK.search(text):
        print(f"error: {args.doc} has no '<!-- results: FOLDER runs|seeds -->' blocks", file=sys.stderr)
        return 2
    if args.check:
        if render(text, args.results) != text:
            print(f"{args.doc}: its tables differ from {args.results}; run: python -m scripts.results")
            return 1
        print(f"{args.doc}: tables match {args.results}")
        return 0
    for folder in sorted(set(BLOCK.findall(text)), key=str):
        write_report(args.results / folder[1])
    args.doc.write_text(render(text, args.results))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
