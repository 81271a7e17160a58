"""The generative classifier: score the test documents under every class model, report, label.

    python -m gpt2.classify report [RESULTS]        # score and report a results folder's classifiers
    python -m gpt2.classify label "some text" ...   # label new documents with trained class models
    python -m gpt2.classify label --file docs.txt   # one document per line (--results, --set pick the models)

`make` with CLASSIFY=y prepares the labelled corpus, trains one model per class and calls the
report (scripts/run_test_matrix.py does the last two). Each classifier, one per combination of the
test matrix, gets its folder RESULTS/classify/<combination>/: scores.npz (every test document's
log-likelihood under every class model), report.json and report.md (accuracy, macro-F1, the
baseline's, per-class figures, perplexities), confusion.csv/.png and predictions.csv; and
RESULTS/classify/summary.md compares them (accuracy against sparsity).
"""

if __name__ == "__main__" and not __package__:  # `python3 gpt2/classify.py`
    import _script  # gpt2/_script.py, beside this file

    _script.rerun_as_module("gpt2.classify")


import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gpt2.hf import linear_sparsity, model_from_run
from gpt2.prepare_data import gpt2_encoding
from lib.classify.baseline import corpus_baseline
from lib.classify.corpus import (
    class_folders,
    class_names,
    corpus_dir,
    held_out_documents,
    require_corpus,
    train_priors,
)
from lib.classify.report import report_set, write_comparison
from lib.classify.score import default_stride, log_likelihoods, predictions
from lib.classify.sources import LabelledDataError
from lib.config.load import load_settings
from lib.errors import Refusal
from lib.io import atomic_write
from lib.measure.summary import FINISHED, RunSummary
from lib.runtime.device import amp_dtype, resolve_device
from lib.study.report import PLAN_FILE, model_sets
from lib.train.checkpoint import CHECKPOINT_FILE
from lib.train.settings import Settings

log = logging.getLogger("classify")
CLASSIFY_DIR = "classify"
SCORES_FILE = "scores.npz"


def check_class_run(run_dir: Path, corpus: dict) -> RunSummary:
    """A class model's summary, refused when unfinished, trained on other tokens or without weights."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise LabelledDataError(
            f"{run_dir} has no trained class model (no summary.json): train it first (make, or "
            "python -m scripts.run_test_matrix, which resumes the unfinished ones)"
        )
    summary = RunSummary.read(path)
    if summary.status not in FINISHED:
        raise LabelledDataError(
            f"{run_dir}: its training ended {summary.status}; run the matrix again to finish it"
        )
    data = summary.data or {}
    if data.get("corpus") != corpus["corpus"] or data.get("tokenizer") != corpus["tokenizer"]:
        raise LabelledDataError(
            f"{run_dir} was trained on corpus {data.get('corpus')!r} ({data.get('tokenizer')}), not on the "
            f"prepared corpus {corpus['corpus']!r} ({corpus['tokenizer']}); the labelled data changed since. "
            "Train the class models again (a new results folder: make)"
        )
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise LabelledDataError(f"{run_dir} has no {CHECKPOINT_FILE}: its final weights are needed to score")
    return summary


def class_model(run_dir: Path, corpus: dict) -> torch.nn.Module:
    """A finished class model's final weights (check_class_run's refusals first)."""
    check_class_run(run_dir, corpus)
    return model_from_run(run_dir, "last")


def _runs_fingerprint(results: Path, runs: dict[str, str]) -> str:
    """Changes when any class model changes (its summary and checkpoint)."""
    h = hashlib.sha256()
    for folder, run in runs.items():
        h.update(folder.encode())
        h.update((results / run / "summary.json").read_bytes())
        st = (results / run / CHECKPOINT_FILE).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def score_set(results: Path, name: str, runs: dict[str, str], s: Settings, corpus: dict) -> dict:
    """Score the test documents under each class model of one classifier (kept if up to date)."""
    out = results / CLASSIFY_DIR / name
    folders = class_folders(corpus)
    missing = [f for f in folders if f not in runs]
    if missing:
        raise LabelledDataError(f"{name}: no class model for {', '.join(missing)} in {results / PLAN_FILE}")
    docs, labels = held_out_documents(s.data.data_dir)
    if s.classify.max_test_docs:
        docs, labels = docs[: s.classify.max_test_docs], labels[: s.classify.max_test_docs]
    for folder in folders:
        check_class_run(results / runs[folder], corpus)
    block = s.model.block_size
    stride = default_stride(block, s.classify.stride)
    wanted = {
        "corpus": corpus["corpus"],
        "runs": _runs_fingerprint(results, runs),
        "block": block,
        "stride": stride,
        "documents": len(docs),
    }
    scores_path = out / SCORES_FILE
    if scores_path.is_file():
        with np.load(scores_path) as saved:
            if json.loads(str(saved["scoring"])) == wanted:
                log.info("%s: scores up to date (%s)", name, scores_path)
                return dict(saved)
    device = resolve_device(s.runtime.device)
    amp = amp_dtype(device, s.runtime.mixed_precision, s.runtime.amp_dtype)
    loglik = np.zeros((len(docs), len(folders)))
    sparsity, seconds = [], 0.0
    for c, folder in enumerate(folders):
        run_dir = results / runs[folder]
        model = class_model(run_dir, corpus)
        sparsity.append(linear_sparsity(model))
        model.to(device)
        start = time.perf_counter()
        loglik[:, c] = log_likelihoods(
            model,
            docs,
            block=model.config.block_size,
            stride=min(stride, model.config.block_size),
            batch_size=s.classify.score_batch,
            device=device,
            amp=amp,
            desc=f"{name}: {folder}",
        )
        seconds += time.perf_counter() - start
        del model
    saved = {
        "loglik": loglik,
        "counts": predictions(np.array([len(d) for d in docs])),
        "labels": labels,
        "prior": train_priors(corpus),
        "classes": np.array(class_names(corpus)),
        "sparsity": np.array(sparsity),
        "seconds": np.array(seconds),
        "scoring": np.array(json.dumps(wanted)),
        "device": np.array(str(device)),
    }

    def write(f) -> None:
        np.savez(f, **saved)

    atomic_write(scores_path, write)
    return saved


def report_results(results: Path, s: Settings | None = None) -> list[dict]:
    """Score and report every classifier of a results folder, then their comparison; the reports."""
    s = s or load_settings(results / "config.py")
    corpus = require_corpus(s.data.data_dir)
    plan = json.loads((results / PLAN_FILE).read_text())
    if plan.get("classify", {}).get("corpus") not in (None, corpus["corpus"]):
        raise LabelledDataError(
            f"{results} holds class models of corpus {plan['classify']['corpus']!r}, but "
            f"{corpus_dir(s.data.data_dir)} now holds {corpus['corpus']!r}; prepare that corpus again "
            "or train in a new results folder (make)"
        )
    out = results / CLASSIFY_DIR
    baseline = None
    if s.classify.baseline:
        baseline = corpus_baseline(out / "baseline.json", s.data.data_dir, corpus, s.classify.max_test_docs)
    reports = []
    for name, runs in model_sets(results).items():
        scores = score_set(results, name, runs, s, corpus)
        flags = {"normalised": s.classify.length_normalised, "use_prior": s.classify.prior}
        reports.append(report_set(out / name, name, scores, baseline, **flags))
    write_comparison(out, reports, plan)
    return reports


def label_documents(results: Path, texts: list[str], model_set: str | None, s: Settings) -> list[dict]:
    """Each text's most likely class and every class's probability under one trained classifier."""
    corpus = require_corpus(s.data.data_dir)
    sets = model_sets(results)
    if not sets:
        raise LabelledDataError(f"{results} holds no class models (was CLASSIFY=y when it ran?)")
    name = model_set or next(iter(sets))
    if name not in sets:
        raise LabelledDataError(f"{results} has no classifier {name!r}; it has: {', '.join(sets)}")
    enc = gpt2_encoding()
    docs = [np.asarray(t, dtype=np.uint16) for t in enc.encode_ordinary_batch(texts)]
    device = resolve_device(s.runtime.device)
    amp = amp_dtype(device, s.runtime.mixed_precision, s.runtime.amp_dtype)
    loglik = np.zeros((len(docs), len(class_folders(corpus))))
    for c, folder in enumerate(class_folders(corpus)):
        model = class_model(results / sets[name][folder], corpus)
        model.to(device)
        block = model.config.block_size
        loglik[:, c] = log_likelihoods(
            model,
            docs,
            block=block,
            stride=default_stride(block, s.classify.stride),
            batch_size=s.classify.score_batch,
            device=device,
            amp=amp,
            desc=folder,
        )
    from lib.classify.metrics import decision_scores, probabilities

    scores = decision_scores(
        loglik,
        predictions(np.array([len(d) for d in docs])),
        train_priors(corpus),
        normalised=s.classify.length_normalised,
        use_prior=s.classify.prior,
    )
    probs = probabilities(scores)
    classes = class_names(corpus)
    return [
        {"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p), strict=True))}
        for p in probs
    ]


def _newest_results() -> Path | None:
    """The newest results folder holding class models (test_matrix_results_*/classify)."""
    folders = sorted(p for p in Path.cwd().glob("test_matrix_results_*") if (p / PLAN_FILE).is_file())
    with_sets = [p for p in folders if model_sets(p)]
    return with_sets[-1] if with_sets else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="score and report the classifiers of a results folder")
    rep.add_argument("results", nargs="?", type=Path, help="default: the newest with class models")
    lab = sub.add_parser("label", help="label documents with a trained classifier")
    lab.add_argument("texts", nargs="*", help="documents to label (or --file)")
    lab.add_argument("--file", type=Path, help="one document per line ('-': standard input)")
    lab.add_argument(
        "--results", type=Path, help="the results folder (default: the newest with class models)"
    )
    lab.add_argument("--model-set", help="which classifier of that folder (default: its first)")
    for q in (rep, lab):
        q.add_argument(
            "--config", type=Path, default=None, help="settings (default: the results folder's config.py)"
        )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = args.results or _newest_results()
        if results is None or not (results / PLAN_FILE).is_file():
            raise Refusal(
                "no results folder with class models here; train them first (make, with CLASSIFY=y)"
            )
        s = load_settings(args.config or results / "config.py")
        if args.command == "report":
            for r in report_results(results, s):
                base = (
                    ""
                    if r["baseline_accuracy"] is None
                    else f" | tf-idf + LR {100 * r['baseline_accuracy']:.2f}%"
                )
                print(
                    f"{r['model_set']}: accuracy {100 * r['accuracy']:.2f}% | macro-F1 {100 * r['macro_f1']:.2f}%{base}"
                )
            print(f"report: {results / CLASSIFY_DIR / 'summary.md'}")
            return 0
        texts = list(args.texts)
        if args.file is not None:
            source = sys.stdin if str(args.file) == "-" else open(args.file, encoding="utf-8")
            with source:
                texts += [line.rstrip("\n") for line in source if line.strip()]
        if not texts:
            raise Refusal("no documents to label: give them as arguments or with --file")
        for text, out in zip(texts, label_documents(results, texts, args.model_set, s), strict=True):
            probs = ", ".join(f"{c} {p:.3f}" for c, p in out["probabilities"].items())
            shown = text if len(text) <= 60 else text[:57] + "..."
            print(f"{out['label']}\t{probs}\t{shown}")
    except UnicodeDecodeError as e:
        print(f"error: {args.file}: not UTF-8 text (byte {e.start})", file=sys.stderr)
        return 2
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
