"""Regenerate the tables of docs/results.md from the results folders kept under docs/results/.

    python -m scripts.results            # rebuild each folder's report, then the tables in results.md
    python -m scripts.results --check    # exit 1 if results.md differs from what the folders give

A table in the document is a block

    <!-- results: FOLDERS runs|seeds -->
    <!-- results: FOLDERS paired REFERENCE -->
    <!-- results: FOLDERS speed [REFERENCE] -->
    <!-- results: FOLDER classify -->
    ...
    <!-- /results -->

whose body is replaced by the per-run table ("runs"), the across-seeds table ("seeds"), each
combination's seed-paired perplexity difference from REFERENCE with its 95% interval ("paired"),
or each combination's median-interval ms/iter against REFERENCE's ("speed") of the runs in
docs/results/FOLDERS, or its generative classifiers' accuracies beside the baseline's, one by one
and across seeds ("classify", recomputed from each classifier's saved scores.npz), as lib/study/report.py computes them. FOLDERS is one folder or several joined by
"+" (a study kept in several folders, compared across them; run names must not repeat); a folder
written FOLDER:PATTERN contributes only its runs whose names match the shell pattern (a control
compared with the one combination it controls for). So every number in those tables comes from the
run summaries, and `--check` (run by the tests) catches a table edited by hand or a summary changed
without the document.
"""

import argparse
import fnmatch
import json
import re
import sys
from pathlib import Path

from lib.classify.report import comparison_tables, saved_reports
from lib.config.load import load_settings
from lib.study.report import (
    PAIRED_COLUMNS,
    PLAN_FILE,
    SEED_COLUMNS,
    SPEED_COLUMNS,
    collect,
    columns,
    markdown_table,
    paired_differences,
    seed_groups,
    speed_groups,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"
BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<folder>[\w.:*-]+(?:\+[\w.:*-]+)*) (?P<kind>runs|seeds|paired|speed|classify)"
    r"(?: (?P<ref>[\w.-]+))? -->\n)"
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


Folders = list[tuple[Path, str]]
"""A block's results folders, each with the pattern its runs must match ("" for all)."""


def named(folders: Folders) -> str:
    """The folders of a block as the document names them."""
    return "+".join(folder.name + (f":{pattern}" if pattern else "") for folder, pattern in folders)


def gather(folders: Folders) -> list[dict]:
    """The rows of one or more results folders (a folder named FOLDER:PATTERN: only its runs whose
    names match), best perplexity first; a run name may not repeat."""
    rows: list[dict] = []
    for folder, pattern in folders:
        if not (folder / PLAN_FILE).is_file():
            raise SystemExit(f"error: {folder} is not a test matrix results folder (no {PLAN_FILE})")
        rows += [r for r in collect(folder) if not pattern or fnmatch.fnmatchcase(r["run"], pattern)]
    names = [r["run"] for r in rows]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SystemExit(f"error: run names repeat across {named(folders)}: {twice}")
    rows.sort(key=lambda r: (r["final_val_ppl"] is None, r["final_val_ppl"] or float("inf")))
    return rows


def table(folders: Folders, kind: str, reference: str | None = None) -> str:
    """The markdown table of results folders: every run, each combination across its seeds, each
    combination's seed-paired difference from `reference`, or each combination's speed."""
    if kind == "classify":
        return classify_table(folders)
    rows = gather(folders)
    if kind in ("paired", "speed"):
        try:
            if kind == "paired":
                lines = markdown_table(paired_differences(rows, reference or ""), PAIRED_COLUMNS)
            else:
                lines = markdown_table(speed_groups(rows, reference), SPEED_COLUMNS)
        except ValueError as e:
            raise SystemExit(f"error: {named(folders)}: {e}") from None
    elif kind == "seeds":
        groups = seed_groups(rows)
        lines = markdown_table(groups, SEED_COLUMNS, bold=groups[0]["combination"] if groups else None)
    else:
        done = [r for r in rows if r["final_val_ppl"] is not None]
        lines = markdown_table(done, RUN_COLUMNS, bold=done[0]["run"] if done else None)
    return "\n".join(lines) + "\n"


def classify_table(folders: Folders) -> str:
    """A results folder's generative classifiers, recomputed from their saved scores."""
    if len(folders) != 1 or folders[0][1]:
        raise SystemExit(f"error: {named(folders)}: a classify block takes one whole results folder")
    folder = folders[0][0]
    if not (folder / "classify").is_dir():
        raise SystemExit(f"error: {folder} has no classify/ folder (not a generative classifier study)")
    s = load_settings(folder / "config.py")
    flags = {"normalised": s.classify.length_normalised, "use_prior": s.classify.prior}
    reports = saved_reports(folder, **flags)
    plan = json.loads((folder / PLAN_FILE).read_text())
    return "\n".join(comparison_tables(reports, plan)) + "\n"


def render(text: str, results_root: Path) -> str:
    """`text` with every results block's body replaced by its table."""

    def replace(m: re.Match) -> str:
        specs = [name.partition(":") for name in m["folder"].split("+")]
        folders = [(results_root / name, pattern) for name, _, pattern in specs]
        return m["open"] + table(folders, m["kind"], m["ref"]) + m["close"]

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
    for name in sorted({f.partition(":")[0] for m in BLOCK.finditer(text) for f in m["folder"].split("+")}):
        write_report(args.results / name)
    args.doc.write_text(render(text, args.results))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
