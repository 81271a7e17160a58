"""The test matrix's comparison report: summary.{json,csv,md} and plots, from a results folder.

Everything is read from the run folders (summary.json, metrics.jsonl,
failure.json), so the report can be rebuilt at any time from what is on disk.
"""

import csv
import io
import json
import math
import re
import statistics
from pathlib import Path

from lib.io import atomic_write_json, atomic_write_text
from lib.measure.metrics import read_metrics
from lib.measure.summary import RunSummary

PLAN_FILE = "matrix.json"
FAILURE_FILE = "failure.json"
COLUMNS = [
    ("run", "run"),
    ("status", "status"),
    ("optimizer", "optimizer"),
    ("variant", "variant"),
    ("method", "pruning"),
    ("target_sparsity", "target"),
    ("sparsity", "sparsity (measured)"),
    ("final_val_loss", "val loss"),
    ("final_val_ppl", "val ppl"),
    ("iters", "iters"),
    ("tokens", "tokens"),
    ("train_seconds", "train s"),
    ("ms_per_iter", "ms/iter"),
    ("tokens_per_sec", "tok/s"),
    ("peak_memory_gib", "peak mem GiB"),
    ("state_per_weight", "state bytes / weight bytes"),
    ("mean_power_w", "mean GPU W"),
    ("energy_wh", "GPU Wh"),
    ("decode_p50_ms", "decode p50 ms"),
    ("downstream", "lm-eval"),
    ("reason", "failure"),
]


def downstream_text(lm_eval: dict | None) -> str | None:
    """'task metric=value ...' of an lm-eval result, for one table cell."""
    if not lm_eval:
        return None
    if "error" in lm_eval:
        return "failed"
    return "; ".join(
        f"{task} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        for task, metrics in sorted(lm_eval.items())
    )


def decode_latency(inference: list[dict] | None) -> float | None:
    """p50 ms of one generation step at batch 1 and the longest timed length, if timed."""
    steps = [r for r in inference or [] if r["mode"] == "decode" and r["batch_size"] == 1]
    return max(steps, key=lambda r: r["seq_len"])["p50_ms"] if steps else None


def run_status(run_dir: Path) -> tuple[str, dict]:
    """(status, record) of one run folder: completed, time_budget, diverged, failed, interrupted or pending."""
    failure = run_dir / FAILURE_FILE
    summary = run_dir / "summary.json"
    if failure.is_file():
        return "failed", json.loads(failure.read_text())
    if summary.is_file():
        record = json.loads(summary.read_text())
        return record["status"], record
    if (run_dir / "ckpt.pt").is_file():
        return "interrupted", {}
    return "pending", {}


def collect(results: Path) -> list[dict]:
    """One row per planned run, best perplexity first; rows carry every COLUMNS key."""
    plan = json.loads((results / PLAN_FILE).read_text())
    rows = []
    for run in plan["runs"]:
        status, record = run_status(results / run["name"])
        summary = RunSummary.from_dict(record) if status not in ("failed", "pending", "interrupted") else None

        def get(key: str, summary: RunSummary | None = summary):
            return getattr(summary, key) if summary is not None else None

        weight_bytes = get("prunable_weight_bytes") or get("param_bytes")
        state = get("training_bytes_per_weight_byte")
        if state is None and weight_bytes:
            state = (weight_bytes + (get("optimizer_state_bytes") or 0)) / weight_bytes
        gpu = get("gpu") or {}
        row = {
            "run": run["name"],
            "dir": results / run["name"],
            "seed": run.get("seed"),
            "swept": run.get("swept", {}),
            "status": status,
            "optimizer": run.get("optimizer_label", run["optimizer"]),  # adamwprune-spam: the SPAM base
            "variant": run["variant"],
            "method": run["method"],
            "target_sparsity": run["sparsity"],
            "peak_memory_gib": get("peak_memory_bytes") / 2**30 if get("peak_memory_bytes") else None,
            "state_per_weight": state,
            "mean_power_w": gpu.get("mean_power_watts"),
            "energy_wh": gpu.get("energy_wh"),
            "decode_p50_ms": decode_latency(get("inference")),
            "downstream": downstream_text(get("lm_eval")),
            "reason": record.get("reason") if status == "failed" else None,
            "log_tail": record.get("log_tail") if status == "failed" else None,
        }
        for key in (
            "sparsity",
            "final_val_loss",
            "final_val_ppl",
            "iters",
            "tokens",
            "train_seconds",
            "ms_per_iter",
            "tokens_per_sec",
        ):
            row[key] = get(key)
        rows.append(row)
    rows.sort(key=lambda r: (r["final_val_ppl"] is None, r["final_val_ppl"] or math.inf))
    return rows


def _fmt(value, key: str) -> str:
    if value is None:
        return "-"
    if key in ("target_sparsity", "sparsity"):
        return f"{100 * value:.2f}%"
    if key == "iters" and isinstance(value, float):
        return f"{value:,.0f}"
    if key in ("final_val_loss",):
        return f"{value:.4f}"
    if key in (
        "final_val_ppl",
        "train_seconds",
        "ms_per_iter",
        "peak_memory_gib",
        "state_per_weight",
        "mean_power_w",
        "energy_wh",
        "decode_p50_ms",
        "median_ms",
    ):
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


SEED_SUFFIX = re.compile(r"_s\d+$")


def columns(*keys: str) -> list[tuple[str, str]]:
    """(row key, title) pairs of COLUMNS, in the order given."""
    titles = dict(COLUMNS)
    return [(k, titles[k]) for k in keys]


# The across-seeds table: each metric is the mean over the combination's seeds.
SEED_COLUMNS = [
    ("combination", "combination"),
    ("seeds", "seeds"),
    ("final_val_ppl", "val ppl (mean)"),
    ("ppl_range", "val ppl (min-max)"),
    *columns("sparsity", "iters", "ms_per_iter", "tokens_per_sec", "peak_memory_gib", "state_per_weight"),
]
_MEANS = ("final_val_loss", *(k for k, _ in SEED_COLUMNS if k not in ("combination", "seeds", "ppl_range")))


def seed_groups(rows: list[dict]) -> list[dict]:
    """Completed runs grouped by combination (the run name without _s<seed>), best mean perplexity first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["final_val_ppl"] is not None:
            groups.setdefault(SEED_SUFFIX.sub("", r["run"]), []).append(r)
    out = []
    for name, members in groups.items():
        ppl = [r["final_val_ppl"] for r in members]
        group = {"combination": name, "seeds": len(members), "runs": [r["run"] for r in members]}
        for key in _MEANS:
            values = [r[key] for r in members if r[key] is not None]
            group[key] = statistics.fmean(values) if values else None
        group.update(ppl_min=min(ppl), ppl_max=max(ppl), ppl_range=f"{min(ppl):,.2f}-{max(ppl):,.2f}")
        out.append(group)
    out.sort(key=lambda g: g["final_val_ppl"])
    return out


# Two-sided 95% quantiles of Student's t by degrees of freedom (n seeds - 1); beyond the table, 1.96.
PAIRED_COLUMNS = [
    ("combination", "combination"),
    ("seeds", "paired seeds"),
    ("diffs", "per seed (ppl)"),
    ("mean_diff", "mean difference (ppl)"),
    ("ci95", "95% interval"),
    ("verdict", "resolved?"),
    ("p", "p (paired t)"),
    ("holm", "resolved, Holm"),
]


def holm(p_values: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down verdicts for several tests at family-wise error rate `alpha`: sorted by p,
    the i-th smallest (from 0) is rejected while p <= alpha / (m - i); the first that is not stops
    every later one (Holm 1979)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    verdict = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        verdict[i] = True
    return verdict


def paired_differences(rows: list[dict], reference: str) -> list[dict]:
    """Each combination's final perplexity minus `reference`'s, seed by seed, with a 95% t-interval.

    Seeds pair runs that share initialisation and batch order, so the seed-to-seed spread cancels;
    a difference is resolved when its interval excludes 0. Beside it, the paired t-test's p and
    Holm's verdict over all the table's comparisons (each row with two or more seeds is one), which
    holds the chance of any false "resolved" in the table at 5%.
    """
    from scipy import stats  # the t distribution

    by_seed: dict[str, dict[int, float]] = {}
    for r in rows:  # a same-seed repeat (a run named without _s<seed>) pairs with its seed's run
        seed = r.get("seed")
        if seed is None and (m := SEED_SUFFIX.search(r["run"])) is not None:
            seed = int(m[0][2:])
        if r["final_val_ppl"] is not None and seed is not None:
            by_seed.setdefault(SEED_SUFFIX.sub("", r["run"]), {})[seed] = r["final_val_ppl"]
    if reference not in by_seed:
        raise ValueError(f"no completed runs of the reference combination {reference!r}")
    ref, out = by_seed[reference], []
    for name, seeds in by_seed.items():
        if name == reference:
            continue
        diffs = [seeds[s] - ref[s] for s in sorted(seeds) if s in ref]
        row = {"combination": name, "seeds": len(diffs), "diffs": ", ".join(f"{d:+.2f}" for d in diffs)}
        if len(diffs) >= 2:
            mean, sem = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
            df = len(diffs) - 1
            half = stats.t.ppf(0.975, df) * sem
            p = 2 * stats.t.sf(abs(mean) / sem, df) if sem > 0 else (0.0 if mean else 1.0)
            row.update(
                mean_diff=f"{mean:+.2f}",
                ci95=f"{mean - half:+.2f} to {mean + half:+.2f}",
                verdict="yes" if mean - half > 0 or mean + half < 0 else "no",
                p_value=p,
                p=f"{p:.3f}",
            )
        else:
            row.update(mean_diff=f"{diffs[0]:+.2f}" if diffs else "-", ci95="-", verdict="one seed", p="-")
        out.append(row)
    tested = [r for r in out if "p_value" in r]
    for r, rejected in zip(tested, holm([r.pop("p_value") for r in tested]), strict=True):
        r["holm"] = f"{'yes' if rejected else 'no'} (of {len(tested)})"
    for r in out:
        r.setdefault("holm", "-")
    out.sort(key=lambda r: float(r["mean_diff"]) if r["mean_diff"] != "-" else math.inf)
    return out


SPEED_COLUMNS = [
    ("combination", "combination"),
    ("seeds", "runs"),
    ("median_ms", "ms/iter (median interval)"),
    ("median_range", "min-max over runs"),
    ("relative", "vs reference"),
    ("ms_per_iter", "ms/iter (summary)"),
]


def median_interval_ms(run_dir: Path) -> float | None:
    """The median ms/iter of a run's logged training intervals that did not compile.

    Robust to compilation that older trainers did not flag (a recompilation when clipping or
    pruning starts); it leaves out any cost that only some intervals carry, such as a mask
    update every N steps, so it is read beside the summary's mean, not instead of it.
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    ms = [
        m["ms_per_iter"]
        for m in read_metrics(path)
        if m["kind"] == "train" and not m.get("includes_compile") and m.get("ms_per_iter")
    ]
    return statistics.median(ms) if ms else None


def speed_groups(rows: list[dict], reference: str | None = None) -> list[dict]:
    """Each combination's median-interval ms/iter (mean over its runs), fastest first, with the
    ratio to `reference`'s as a signed percentage."""
    groups: dict[str, list[float]] = {}
    means: dict[str, list[float]] = {}
    for r in rows:
        if r["final_val_ppl"] is not None and (ms := median_interval_ms(r["dir"])) is not None:
            name = SEED_SUFFIX.sub("", r["run"])
            groups.setdefault(name, []).append(ms)
            if r["ms_per_iter"] is not None:
                means.setdefault(name, []).append(r["ms_per_iter"])
    if reference is not None and reference not in groups:
        raise ValueError(f"no completed runs of the reference combination {reference!r}")
    ref = statistics.fmean(groups[reference]) if reference else None
    out = []
    for name, values in groups.items():
        mean = statistics.fmean(values)
        out.append(
            {
                "combination": name,
                "seeds": len(values),
                "median_ms": mean,
                "median_range": f"{min(values):.2f}-{max(values):.2f}",
                "relative": "-" if ref is None else f"{100 * (mean / ref - 1):+.1f}%",
                "ms_per_iter": statistics.fmean(means[name]) if name in means else None,
            }
        )
    out.sort(key=lambda g: g["median_ms"])
    return out


def shown_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The summary table's columns, less those no run has a value for (a CPU matrix has no GPU power)."""
    return [c for c in COLUMNS if c[0] != "reason" and any(r.get(c[0]) is not None for r in rows)]


def markdown_table(items: list[dict], columns: list[tuple[str, str]], bold: str | None = None) -> list[str]:
    """A markdown table of `items` in `columns`; the first column of the row named `bold` is marked best."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    first = columns[0][0]
    for item in items:
        cells = [f"**{item[first]}** (best)" if item[first] == bold else str(item[first])]
        cells += [item[k] if isinstance(item[k], str) else _fmt(item[k], k) for k, _ in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def loss_view(curves: list[list[tuple[int, float]]]) -> tuple[float, float, int] | None:
    """(low, high, from_step) of a y-range that shows the trained part of the loss curves, or None.

    The range spans every value from the first evaluation past a fifth of the longest run on;
    the untrained evaluation at step 0 (about 10.8 nats for GPT-2) would otherwise set the scale
    and press the runs' final losses, the part worth comparing, into one line.
    """
    last = max((it for c in curves for it, _ in c), default=0)
    start = next(
        (it for it in sorted({it for c in curves for it, _ in c}) if it >= last / 5 and it > 0), None
    )
    if start is None:
        return None
    shown = [v for c in curves for it, v in c if it >= start]
    low, high = min(v for c in curves for _, v in c), max(shown)
    pad = 0.05 * (high - low) or 0.05
    return low - pad, high + pad, start


def label_groups(
    points: list[tuple[float, float, str]], tol: float = 0.005
) -> list[tuple[float, float, list[str]]]:
    """Points that coincide (same x, y within `tol` relative) merged into one (x, y, names) label."""
    groups: list[tuple[float, float, list[str]]] = []
    for x, y, name in sorted(points):
        for gx, gy, names in groups:
            if abs(gx - x) < 0.05 and abs(gy - y) <= tol * max(abs(gy), 1e-12):
                names.append(name)
                break
        else:
            groups.append((x, y, [name]))
    return groups


def _plots(results: Path, rows: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(9, 5))
    curves = []
    for r in rows:
        path = results / r["run"] / "metrics.jsonl"
        evals = [m for m in read_metrics(path) if m["kind"] == "eval"] if path.is_file() else []
        if evals:
            curves.append([(m["iter"], m["val_loss"]) for m in evals])
            ax.plot(*zip(*curves[-1], strict=True), "o-", ms=3, label=r["run"])
    title = "Validation loss"
    if (view := loss_view(curves)) is not None:  # the untrained start would squash the runs together
        ax.set_ylim(*view[:2])
        title += f" (from step {view[2]}; earlier points lie above)"
    ax.set(xlabel="optimizer step", ylabel="validation loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results / "val_loss.png", dpi=110)
    plt.close(fig)
    made.append("val_loss.png")

    done = [r for r in rows if r["final_val_ppl"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted({r["method"] for r in done}):
        pts = [(r["sparsity"] or 0.0, r["final_val_ppl"]) for r in done if r["method"] == method]
        ax.scatter([100 * x for x, _ in pts], [y for _, y in pts], label=method, s=40)
    points = [
        (100 * (r["sparsity"] or 0.0), r["final_val_ppl"], r["run"].removeprefix("gpt2_")) for r in done
    ]
    for x, y, names in label_groups(points):  # one label for runs that land on the same spot
        ax.annotate("\n".join(names), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set(
        xlabel="measured sparsity of prunable weights (%)",
        ylabel="validation perplexity",
        title="Perplexity vs sparsity",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(results / "ppl_vs_sparsity.png", dpi=110)
    plt.close(fig)
    made.append("ppl_vs_sparsity.png")

    energy = any(r["energy_wh"] for r in done)  # GPU runs with NVML power samples
    panels = 3 if energy else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 0.5 * max(4, len(done)) + 1))
    names = [r["run"].removeprefix("gpt2_") for r in done]
    axes[0].barh(names, [r["train_seconds"] or 0 for r in done])
    axes[0].set(xlabel="training time (s)", title="Time")
    axes[1].barh(names, [r["peak_memory_gib"] or 0 for r in done], color="tab:orange")
    axes[1].set(xlabel="peak memory (GiB)", title="Memory")
    if energy:
        axes[2].barh(names, [r["energy_wh"] or 0 for r in done], color="tab:green")
        axes[2].set(xlabel="GPU energy (Wh; NVML power samples)", title="Energy")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(results / "time_memory.png", dpi=110)
    plt.close(fig)
    made.append("time_memory.png")
    return made


def _seeds_plot(results: Path, groups: list[dict]) -> str:
    """seeds.png: each combination's mean perplexity, with a bar from its worst to its best seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(groups) + 1.5))
    names = [g["combination"].removeprefix("gpt2_") for g in groups][::-1]
    means = [g["final_val_ppl"] for g in groups][::-1]
    low = [g["final_val_ppl"] - g["ppl_min"] for g in groups][::-1]
    high = [g["ppl_max"] - g["final_val_ppl"] for g in groups][::-1]
    ax.errorbar(means, names, xerr=[low, high], fmt="o", capsize=4)
    for y, g in enumerate(groups[::-1]):
        ax.annotate(
            f"{g['final_val_ppl']:.2f} (n={g['seeds']})",
            (g["ppl_max"], y),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set(xlabel="validation perplexity: mean, and the range over seeds", title="Across seeds")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(results / "seeds.png", dpi=110)
    plt.close(fig)
    return "seeds.png"


HIGHER_IS_BETTER = {"tokens_per_sec"}


def _sweep_section(results: Path, rows: list[dict], sweep: dict) -> list[str]:
    """The leaderboard by the sweep's metric and sweep.png: the metric against each swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, paths = sweep["metric"], list(sweep["values"])
    done = [r for r in rows if r.get(metric) is not None]
    done.sort(key=lambda r: -r[metric] if metric in HIGHER_IS_BETTER else r[metric])
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    lines = [
        "",
        f"## Sweep leaderboard ({metric}, {better} is better)",
        "",
        "| rank | run | " + " | ".join(paths) + f" | {metric} |",
        "|" + "---|" * (len(paths) + 3),
    ]
    for i, r in enumerate(done, 1):
        values = [f"{r['swept'].get(p)!r}" for p in paths]
        lines.append(f"| {i} | {r['run']} | " + " | ".join(values) + f" | {_fmt(r[metric], metric)} |")
    fig, axes = plt.subplots(1, len(paths), figsize=(4.5 * len(paths), 4), squeeze=False)
    for ax, path in zip(axes[0], paths, strict=True):
        groups: dict[str, list] = {}
        for r in done:
            others = ", ".join(f"{q.split('.')[-1]}={r['swept'][q]}" for q in paths if q != path)
            key = " ".join(x for x in (r["optimizer"], r["method"], others) if x)
            groups.setdefault(key, []).append((r["swept"][path], r[metric]))
        for key, pts in sorted(groups.items()):
            pts.sort(key=lambda xy: xy[0])
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=4, label=key)
        xs = [v for v in sweep["values"][path] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=path, ylabel=metric, title=f"{metric} vs {path.split('.')[-1]}")
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(results / "sweep.png", dpi=110)
    plt.close(fig)
    return [*lines, "", "![sweep.png](sweep.png)"]


def write_report(results: Path) -> list[dict]:
    """Write summary.json, summary.csv, summary.md and the plots into `results`; return the rows."""
    results = Path(results)
    plan = json.loads((results / PLAN_FILE).read_text())
    rows = collect(results)
    groups = seed_groups(rows)
    repeated = any(g["seeds"] > 1 for g in groups)
    atomic_write_json(
        results / "summary.json",
        {
            "runs": [{k: v for k, v in r.items() if k != "dir"} for r in rows],
            "across_seeds": groups if repeated else [],
            "dropped": plan["dropped"],
            "created": plan["created"],
        },
    )

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(results / "summary.csv", buf.getvalue())

    plots = _plots(results, rows)
    best = next((r["run"] for r in rows if r["final_val_ppl"] is not None), None)
    counts = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    lines = [
        f"# Test matrix {results.name}",
        "",
        f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". Sorted by validation "
        "perplexity; the best is marked. Sparsity is measured on the weights. State bytes count the prunable "
        "weights, their Adam moments and the pruning state, over the weights (dense runs: all parameters).",
        "",
        *markdown_table(rows, shown_columns(rows), bold=best),
    ]
    if repeated:
        lines += [
            "",
            "## Across seeds",
            "",
            "Each combination's completed runs: the mean of each metric, and the spread of perplexity.",
            "",
            *markdown_table(groups, SEED_COLUMNS, bold=groups[0]["combination"]),
        ]
        plots.append(_seeds_plot(results, groups))
    if plan["dropped"]:
        lines += ["", "Combinations not run:", *[f"- {d}" for d in plan["dropped"]]]
    if "sweep" in plan:
        lines += _sweep_section(results, rows, plan["sweep"])
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        lines += ["", f"## {r['run']} failed: {r['reason']}", "", "```", r["log_tail"] or "", "```"]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    atomic_write_text(results / "summary.md", "\n".join(lines) + "\n")
    return rows


def model_sets(results: Path) -> dict[str, dict[str, str]]:
    """A results folder's generative classifiers: combination -> {class folder: run name}, in plan
    order (empty when its runs are not class models)."""
    plan = json.loads((Path(results) / PLAN_FILE).read_text())
    sets: dict[str, dict[str, str]] = {}
    for run in plan["runs"]:
        if run.get("class"):
            sets.setdefault(run["model_set"], {})[run["class"]] = run["name"]
    return sets
