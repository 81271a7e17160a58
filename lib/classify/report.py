"""The generative classifier's reports, from its saved scores (plain data, numpy and matplotlib):
one classifier's report.json/.md, confusion.csv/.png and predictions.csv, and the comparison of a
results folder's classifiers (across seeds, accuracy against sparsity)."""

import csv
import io
import json
from pathlib import Path

import numpy as np

from lib.classify.metrics import summary as metrics_summary
from lib.io import atomic_write, atomic_write_json, atomic_write_text
from lib.study.report import PLAN_FILE, SEED_SUFFIX, markdown_table


def set_report(
    name: str, scores: dict, baseline: dict | None, *, normalised: bool, use_prior: bool
) -> tuple[dict, np.ndarray, np.ndarray]:
    """One classifier's report (report.json's record) from its saved scores (scores.npz's arrays),
    with each document's predicted class and class probabilities."""
    classes = [str(c) for c in scores["classes"]]
    figures = metrics_summary(
        scores["loglik"],
        scores["counts"],
        scores["labels"],
        scores["prior"],
        classes,
        normalised=normalised,
        use_prior=use_prior,
    )
    predicted, probs = figures.pop("predicted"), figures.pop("probabilities")
    seconds = float(scores["seconds"])
    report = {
        "model_set": name,
        **figures,
        "baseline_accuracy": None if not baseline or "accuracy" not in baseline else baseline["accuracy"],
        "baseline_macro_f1": None if not baseline or "macro_f1" not in baseline else baseline["macro_f1"],
        "baseline": None if baseline is None else {k: v for k, v in baseline.items() if k != "predicted"},
        "documents_per_sec": len(scores["labels"]) / seconds if seconds else None,
        "scoring_seconds": round(seconds, 2),
        "scoring": json.loads(str(scores["scoring"])),
        "device": str(scores["device"]),
        "length_normalised": normalised,
        "prior_used": use_prior,
        "sparsity_per_class_model": [float(x) for x in scores["sparsity"]],
        "sparsity": float(np.mean(scores["sparsity"])),
    }
    return report, predicted, probs


def report_set(
    out: Path, name: str, scores: dict, baseline: dict | None, *, normalised: bool, use_prior: bool
) -> dict:
    """report.json, report.md, confusion.csv/.png and predictions.csv of one classifier, from its saved
    scores (scores.npz's arrays), into the folder `out`."""
    report, predicted, probs = set_report(name, scores, baseline, normalised=normalised, use_prior=use_prior)
    classes, figures = [str(c) for c in scores["classes"]], report
    atomic_write_json(out / "report.json", report)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *classes])
    for c, row in zip(classes, figures["confusion"], strict=True):
        w.writerow([c, *row])
    atomic_write_text(out / "confusion.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["document", "true", "predicted", *(f"p({c})" for c in classes)])
    for i, (t, p, row) in enumerate(zip(scores["labels"], predicted, probs, strict=True)):
        w.writerow([i, classes[t], classes[p], *(f"{x:.6f}" for x in row)])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    plot_confusion(np.array(figures["confusion"]), classes, out / "confusion.png", name)
    atomic_write_text(out / "report.md", report_markdown(report))
    return report


def report_markdown(r: dict) -> str:
    """One classifier's report as Markdown."""
    classes = r["classes"]
    lines = [
        f"# Generative classifier {r['model_set']}",
        "",
        f"{r['documents']} test documents, {len(classes)} classes. Accuracy **{100 * r['accuracy']:.2f}%**, "
        f"macro-F1 {100 * r['macro_f1']:.2f}%; majority class {100 * r['majority_accuracy']:.2f}%"
        + (
            f"; tf-idf + logistic regression {100 * r['baseline_accuracy']:.2f}% "
            f"(macro-F1 {100 * r['baseline_macro_f1']:.2f}%)"
            if r["baseline_accuracy"] is not None
            else ("; baseline: " + r["baseline"]["skipped"] if r["baseline"] else "")
        )
        + ".",
        f"Scored {'by the mean log-probability per token' if r['length_normalised'] else 'by the summed log-likelihood'}"
        f"{' plus the log prior' if r['prior_used'] else ''}; {r['documents_per_sec']:.1f} documents/s on "
        f"{r['device']}; class models {100 * r['sparsity']:.2f}% sparse (Linear weights).",
        "",
        "| class | prior | precision | recall | F1 | test documents |",
        "|---|---|---|---|---|---|",
    ]
    for c, prior in zip(classes, r["prior"], strict=True):
        pc = r["per_class"][c]
        lines.append(
            f"| {c} | {prior:.3f} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |"
        )
    lines += ["", "Confusion (rows: true class, columns: predicted):", ""]
    lines += ["| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    lines += [
        f"| {c} | " + " | ".join(str(x) for x in row) + " |"
        for c, row in zip(classes, r["confusion"], strict=True)
    ]
    lines += ["", "Perplexity of each class model (rows) on each class's test documents (columns):", ""]
    lines += ["| model | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    lines += [
        f"| {c} | " + " | ".join(f"{x:.1f}" for x in row) + " |"
        for c, row in zip(classes, r["perplexity"], strict=True)
    ]
    return "\n".join(lines) + "\n"


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """The confusion matrix as a heat map, row-normalised, with the counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.2 + 0.7 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


COMPARISON_COLUMNS = [
    ("model_set", "classifier"),
    ("optimizer", "optimizer"),
    ("pruning", "pruning"),
    ("target", "target sparsity"),
    ("sparsity", "sparsity (measured)"),
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("baseline", "tf-idf + LR"),
    ("docs_per_sec", "documents/s"),
]


def saved_reports(results: Path, *, normalised: bool, use_prior: bool) -> list[dict]:
    """The reports of a results folder's classifiers recomputed from what they saved
    (RESULTS/classify/<classifier>/scores.npz, RESULTS/classify/baseline.json), in plan order;
    nothing is written and no model is needed."""
    out = results / "classify"
    plan = json.loads((results / PLAN_FILE).read_text())
    names = list(dict.fromkeys(r["model_set"] for r in plan["runs"] if r.get("class")))
    baseline_file = out / "baseline.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.is_file() else None
    reports = []
    for name in names:
        with np.load(out / name / "scores.npz", allow_pickle=False) as f:
            scores = {k: f[k] for k in f.files}
        reports.append(set_report(name, scores, baseline, normalised=normalised, use_prior=use_prior)[0])
    return reports


def comparison_tables(reports: list[dict], plan: dict) -> list[str]:
    """Markdown: every classifier's accuracy beside its sparsity, then (with seeds) each combination
    across its seeds."""
    rows = comparison_rows(reports, plan)
    lines = markdown_table(rows, COMPARISON_COLUMNS)
    seeds = across_seeds(reports)
    if any(g["seeds"] > 1 for g in seeds):
        lines += [
            "",
            "Across seeds: the mean accuracy with its 95% t-interval, and the generative accuracy minus the "
            "baseline's (the same split and baseline for every seed):",
            "",
            *markdown_table(seeds, SEED_COLUMNS),
        ]
    return lines


def comparison_rows(reports: list[dict], plan: dict) -> list[dict]:
    runs = {r.get("model_set"): r for r in plan["runs"] if r.get("class")}
    rows = []
    for r in reports:
        run = runs[r["model_set"]]
        rows.append(
            {
                "model_set": r["model_set"],
                "optimizer": run.get("optimizer_label") or run["optimizer"],
                "pruning": run["method"] + (f" ({run['variant']})" if run.get("variant") else ""),
                "target": "-" if run.get("sparsity") is None else f"{100 * run['sparsity']:.0f}%",
                "sparsity": f"{100 * r['sparsity']:.2f}%",
                "accuracy": f"{100 * r['accuracy']:.2f}%",
                "macro_f1": f"{100 * r['macro_f1']:.2f}%",
                "baseline": "-" if r["baseline_accuracy"] is None else f"{100 * r['baseline_accuracy']:.2f}%",
                "docs_per_sec": "-" if r["documents_per_sec"] is None else f"{r['documents_per_sec']:.1f}",
            }
        )
    return rows


def write_comparison(out: Path, reports: list[dict], plan: dict) -> None:
    """summary.md and .json in `out` (RESULTS/classify): every classifier's accuracy beside its sparsity,
    across seeds, and a plot against sparsity."""
    runs = {r.get("model_set"): r for r in plan["runs"] if r.get("class")}
    lines = [
        "# Generative classifiers",
        "",
        f"{len(reports)} classifier(s), each one GPT-2 per class; accuracy on the same test documents.",
        "",
        *comparison_tables(reports, plan),
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", {"classifiers": reports, "across_seeds": across_seeds(reports)})
    plot_accuracy(reports, runs, out / "accuracy_vs_sparsity.png")


SEED_COLUMNS = [
    ("combination", "combination"),
    ("seeds", "seeds"),
    ("accuracy", "accuracy (mean)"),
    ("ci95", "95% interval"),
    ("minus_baseline", "minus tf-idf + LR"),
]


def across_seeds(reports: list[dict]) -> list[dict]:
    """Each combination's classifiers over their seeds (names ending _s<seed>): the mean accuracy,
    its 95% t-interval, and its difference from the baseline's (which every seed shares)."""
    from scipy import stats

    groups: dict[str, list[dict]] = {}
    for r in reports:
        groups.setdefault(SEED_SUFFIX.sub("", r["model_set"]), []).append(r)
    out = []
    for name, members in groups.items():
        acc = np.array([r["accuracy"] for r in members])
        row = {"combination": name, "seeds": len(acc), "accuracy": f"{100 * acc.mean():.2f}%"}
        half = (
            stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else None
        )
        row["ci95"] = (
            "-" if half is None else f"{100 * (acc.mean() - half):.2f}-{100 * (acc.mean() + half):.2f}%"
        )
        base = members[0]["baseline_accuracy"]
        row["minus_baseline"] = "-" if base is None else f"{100 * (acc.mean() - base):+.2f} points"
        out.append(row)
    return out


def plot_accuracy(reports: list[dict], runs: dict, path: Path) -> None:
    """Accuracy against measured sparsity, one series per optimizer and pruning method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for r in reports:
        run = runs[r["model_set"]]
        key = f"{run.get('optimizer_label') or run['optimizer']} + {run['method']}"
        series.setdefault(key, []).append((100 * r["sparsity"], 100 * r["accuracy"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in sorted(series.items()):
        points.sort()
        ax.plot(*zip(*points, strict=True), marker="o", label=key)
    base = next((r["baseline_accuracy"] for r in reports if r["baseline_accuracy"] is not None), None)
    if base is not None:
        ax.axhline(100 * base, color="grey", linestyle="--", label="tf-idf + LR")
    ax.set_xlabel("sparsity of the class models (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
