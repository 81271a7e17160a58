"""The generative classifier (lib/classify, gpt2/prepare_labelled.py, gpt2/classify.py) on real text:
Shakespeare (the suite's Tiny Shakespeare) against Python's own reference documentation (the standard
library's pydoc_data), and Debian's fortunes where a copy is given (FORTUNES_SOURCE; .ci/run fetches it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.classify.corpus import class_folders, held_out_documents, load_corpus_meta
from lib.classify.metrics import summary
from lib.classify.score import log_likelihoods, windows
from lib.classify.sources import Document, LabelledDataError, read_class_folders, read_fortunes, read_table
from lib.classify.splits import split_documents

from .conftest import ROOT, TINY_RUN, make_config


def shakespeare_passages(source: str | None, n: int) -> list[str]:
    """n passages of Tiny Shakespeare, each a few speeches long."""
    text = Path(source).read_text(encoding="utf-8") if source else pytest.skip("needs SHAKESPEARE_SOURCE")
    speeches = [s.strip() for s in text.split("\n\n") if len(s.strip()) > 80]
    return list(dict.fromkeys("\n\n".join(speeches[i : i + 2]) for i in range(0, 2 * n, 2)))[:n]


def python_passages(n: int) -> list[str]:
    """n passages of Python's language reference (pydoc_data, which CPython ships)."""
    from pydoc_data.topics import topics

    paragraphs = [p.strip() for text in topics.values() for p in text.split("\n\n") if len(p.strip()) > 120]
    return list(dict.fromkeys(paragraphs))[:n]  # distinct


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, shakespeare_source) -> Path:
    """A JSONL file: 120 passages of Shakespeare, 120 of Python's reference documentation."""
    path = tmp_path_factory.mktemp("labelled") / "two-sources.jsonl"
    rows = [{"text": t, "label": "shakespeare"} for t in shakespeare_passages(shakespeare_source, 120)]
    rows += [{"text": t, "label": "python-docs"} for t in python_passages(120)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def docs_of(n_per_class: dict[str, int]) -> list[Document]:
    return [
        Document(f"{label} document {i}", label, f"x:{i}")
        for label, n in n_per_class.items()
        for i in range(n)
    ]


# --- splits ------------------------------------------------------------------------------------


def test_the_splits_are_deterministic_stratified_and_disjoint(two_sources):
    docs = read_table(two_sources, "text", "label")
    args = dict(classes=[], val_fraction=0.1, test_fraction=0.2, seed=7)
    a, b = split_documents(docs, **args), split_documents(list(docs), **args)
    assert a.docs == b.docs and a.classes == ["python-docs", "shakespeare"]
    texts = {s: {t for t, _ in a.docs[s]} for s in ("train", "val", "test")}
    assert not (
        texts["train"] & texts["val"] or texts["train"] & texts["test"] or texts["val"] & texts["test"]
    )
    counts = a.counts()
    assert counts["test"] == [24, 24] and counts["val"] == [12, 12] and counts["train"] == [84, 84]
    other = split_documents(docs, **{**args, "seed": 8})
    assert other.docs["test"] != a.docs["test"]  # the seed decides


def test_a_repeated_text_is_one_document_and_a_conflicting_one_none():
    docs = docs_of({"a": 10, "b": 10})
    docs += [Document("a document 3", "a", "dup"), Document("b document 4", "a", "conflict")]
    split = split_documents(docs, classes=[], val_fraction=0.1, test_fraction=0.2, seed=1)
    assert sum(sum(v) for v in split.counts().values()) == 19
    assert split.dropped == {"repeated": 1, "conflicting labels": 2}


def test_a_sources_own_test_split_is_kept_and_never_trains(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        for label in ("neg", "pos"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / label / f"{i}.txt").write_text(f"{label} {split} review {i}")
    (tmp_path / "test" / "pos" / "copy.txt").write_text("pos train review 0")  # a training text in the test
    docs = read_class_folders(tmp_path)
    split = split_documents(docs, classes=[], val_fraction=0.2, test_fraction=0.2, seed=1)
    assert {t for t, _ in split.docs["test"]} == {d.text for d in docs if d.given_split == "test"}
    assert "pos train review 0" not in {t for t, _ in split.docs["train"] + split.docs["val"]}


BAD_TABLES = [
    (
        "text,category\nhello,a\n",
        "no column 'label' in its header (columns: text, category); set CLASSIFY_LABEL_COLUMN",
    ),
    ("text,label\nhello,a\n ,b\n", "bad.csv:3: empty text"),
    ("text,label\nhello,\n", "empty label"),
]


@pytest.mark.parametrize("content,message", BAD_TABLES)
def test_a_bad_table_is_refused_with_its_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(LabelledDataError) as e:
        read_table(path, "text", "label")
    assert message in str(e.value)


def test_non_utf8_text_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("text\tlabel\nok\ta\ncaf\xe9\tb\n".encode("latin-1"))
    with pytest.raises(LabelledDataError, match=r"line 3 is not UTF-8 text .*iconv"):
        read_table(path, "text", "label")


@pytest.mark.parametrize(
    "docs,classes,message",
    [
        (docs_of({"a": 20}), [], "one class only"),
        (
            docs_of({"a": 20, "b": 20}),
            ["a", "c"],
            "names 'c', which the source does not have; its classes: a, b",
        ),
        (docs_of({"a": 20, "b": 2}), [], "class 'b' has 2 documents, too few"),
    ],
)
def test_a_corpus_that_cannot_be_split_is_refused(docs, classes, message):
    with pytest.raises(LabelledDataError, match=message):
        split_documents(docs, classes=classes, val_fraction=0.1, test_fraction=0.2, seed=1)


def test_a_class_seen_only_in_the_test_split_is_refused():
    docs = docs_of({"a": 10, "b": 10}) + [Document("c only", "c", "t", "test")] * 1
    with pytest.raises(LabelledDataError, match="'c' appear only in the source's test split"):
        split_documents(docs, classes=[], val_fraction=0.1, test_fraction=0.2, seed=1)


def test_heavy_imbalance_is_noted_and_the_report_gives_per_class_figures():
    split = split_documents(
        docs_of({"a": 200, "b": 12}), classes=[], val_fraction=0.1, test_fraction=0.2, seed=1
    )
    assert any("imbalanced classes" in n for n in split.notes)
    labels = np.array([0] * 8 + [1] * 2)
    loglik = np.where(np.eye(2)[labels] > 0, -1.0, -2.0)
    prior = np.array([0.9, 0.1])
    with_prior = summary(loglik, np.ones(10), labels, prior, ["a", "b"], normalised=False, use_prior=True)
    # the prior outweighs a one-nat likelihood: every b is called a; the accuracy (80%) alone hides it
    assert with_prior["accuracy"] == with_prior["majority_accuracy"] == 0.8
    assert with_prior["per_class"]["b"]["recall"] == 0.0 and with_prior["macro_f1"] < 0.5
    without = summary(loglik, np.ones(10), labels, prior, ["a", "b"], normalised=False, use_prior=False)
    assert without["accuracy"] == 1.0 and without["per_class"]["b"]["recall"] == 1.0


# --- fortunes ----------------------------------------------------------------------------------


def test_fortune_files_are_read_one_cookie_each_and_indexes_left_out(tmp_path):
    (tmp_path / "science").write_text("E = mc^2\n%\nNothing is certain.\n  -- a physicist\n%\n")
    (tmp_path / "science.dat").write_bytes(b"\x00\x01")
    (tmp_path / "off").mkdir()
    docs = read_fortunes(tmp_path)
    assert [(d.label, d.text) for d in docs] == [
        ("science", "E = mc^2"),
        ("science", "Nothing is certain.\n  -- a physicist"),
    ]


def test_debians_fortunes_package_is_a_real_labelled_corpus():
    source = os.environ.get("FORTUNES_SOURCE")
    if not source:
        pytest.skip(
            "FORTUNES_SOURCE names no copy of Debian's fortunes (.ci/run fetches it: apt-get download fortunes)"
        )
    docs = read_fortunes(source)
    by_class = {}
    for d in docs:
        by_class[d.label] = by_class.get(d.label, 0) + 1
    assert by_class["computers"] > 1000 and by_class["science"] > 600 and len(by_class) > 30


# --- scoring -----------------------------------------------------------------------------------


def tiny_gpt(block: int = 16):
    from gpt2.model import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2-tiny", block_size=block)).eval()


def hand_log_likelihood(model, doc: np.ndarray, block: int, stride: int) -> float:
    """Each prediction on its own: target j of [t1..tn, EOT] read after the inputs from the start of
    the first window that reaches it, the window start k * stride with k * stride + block > j."""
    seq = torch.tensor([50256, *doc.tolist(), 50256])
    total = 0.0
    for j in range(len(seq) - 1):
        k = max(0, (j - block) // stride + 1)
        context = seq[k * stride : j + 1].unsqueeze(0)
        logits, _ = model(context, all_positions=True)
        total += torch.log_softmax(logits[0, -1, :50257].double(), -1)[seq[j + 1]].item()
    return total


def test_a_documents_score_is_the_sum_of_its_log_probabilities_windows_included():
    model, block, stride = tiny_gpt(16), 16, 6
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50257, n).astype(np.uint16) for n in (5, 15, 16, 41)]
    got = log_likelihoods(model, docs, block=block, stride=stride, batch_size=3, device=torch.device("cpu"))
    with torch.no_grad():
        want = [hand_log_likelihood(model, d, block, stride) for d in docs]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # one document at a time, or with others in one padded batch: the same
    alone = [
        log_likelihoods(model, [d], block=block, stride=stride, batch_size=1, device=torch.device("cpu"))[0]
        for d in docs
    ]
    np.testing.assert_allclose(got, alone, rtol=1e-6)


def test_windows_count_every_prediction_once():
    for n, block, stride in ((0, 4, 2), (3, 4, 2), (10, 4, 1), (10, 4, 4), (37, 8, 3)):
        counted = [j for start, end, first in windows(n, block, stride) for j in range(first, end)]
        assert counted == list(range(n + 1)), (n, block, stride)
        assert all(end - start <= block for start, end, _ in windows(n, block, stride))


# --- the whole pipeline ------------------------------------------------------------------------


def _runner(config: Path, data: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.run_test_matrix",
            "--config",
            str(config),
            "--classify-data",
            str(data),
            *flags,
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_two_real_sources_are_told_apart_and_a_stopped_study_resumes(tmp_path, kconf, two_sources):
    """make classify DATA=... as the runner does it: stopped after one class model, resumed, scored,
    reported beside the baseline; the report recomputed from its saved scores; new text labelled."""
    data_dir = tmp_path / "data"
    config = make_config(
        tmp_path,
        TINY_RUN.replace("CONFIG_BATCH_SIZE=4", "CONFIG_BATCH_SIZE=8")
        + f'CONFIG_GPT2_MAX_ITERS=20\nCONFIG_GPT2_EVAL_INTERVAL=20\nCONFIG_LEARNING_RATE="3e-3"\n'
        f'CONFIG_DATA_DIR="{data_dir}"\nCONFIG_OPTIMIZER_SELECT_ADAMW=y\n',
        kconf,
    )
    first = _runner(config, two_sources, tmp_path, "--stop-after", "1")
    assert first.returncode == 130, first.stdout + first.stderr  # one class model done, the other left
    assert "1 runs left for the next call" in first.stdout
    second = _runner(config, two_sources, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 finished, 0 failed, 0 interrupted; 1 kept from before" in second.stdout
    (results,) = tmp_path.glob("test_matrix_results_*")
    report = json.loads((results / "classify" / "gpt2_adamw_none" / "report.json").read_text())
    assert report["classes"] == ["python-docs", "shakespeare"] and report["documents"] == 48
    assert report["accuracy"] >= 0.95 and report["baseline_accuracy"] >= 0.95
    assert f"accuracy {100 * report['accuracy']:.2f}%" in second.stdout and "tf-idf + LR" in second.stdout

    # the report's numbers are the saved scores' numbers
    with np.load(results / "classify" / "gpt2_adamw_none" / "scores.npz") as saved:
        again = summary(
            saved["loglik"],
            saved["counts"],
            saved["labels"],
            saved["prior"],
            report["classes"],
            normalised=False,
            use_prior=True,
        )
        _, labels = held_out_documents(data_dir)
        assert (saved["labels"] == labels).all()
    assert (again["accuracy"], again["macro_f1"], again["confusion"]) == (
        report["accuracy"],
        report["macro_f1"],
        report["confusion"],
    )
    for name in ("confusion.csv", "confusion.png", "predictions.csv", "report.md"):
        assert (results / "classify" / "gpt2_adamw_none" / name).is_file()

    # new documents, labelled with their probabilities
    label = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt2.classify",
            "label",
            "--results",
            str(results),
            "My lord, I will attend upon your grace; thou art a villain, knave.",
            "The assignment statement evaluates the expression list and assigns the single resulting object.",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert label.returncode == 0, label.stderr
    lines = label.stdout.strip().splitlines()
    assert lines[0].startswith("shakespeare\t") and lines[1].startswith("python-docs\t")
    assert "python-docs 0." in lines[0] and "shakespeare 0." in lines[0]

    # a class model gone, and a corpus changed under the models: clear refusals
    from gpt2.classify import report_results
    from lib.config.load import load_settings

    s = load_settings(config)
    run = next(results.glob("*_class-shakespeare"))
    (run / "ckpt.pt").rename(run / "ckpt.moved")
    (results / "classify" / "gpt2_adamw_none" / "scores.npz").unlink()
    with pytest.raises(LabelledDataError, match="has no ckpt.pt: its final weights are needed"):
        report_results(results, s)
    (run / "ckpt.moved").rename(run / "ckpt.pt")
    meta = load_corpus_meta(data_dir)
    assert class_folders(meta) == ["python-docs", "shakespeare"]
    from gpt2.prepare_labelled import prepare_labelled

    prepare_labelled(
        s.replace(
            {
                "classify.enabled": True,
                "classify.source": "file",
                "classify.path": str(two_sources),
                "classify.split_seed": 99,
            }
        )
    )
    with pytest.raises(LabelledDataError, match="now holds"):
        report_results(results, s)


def test_the_kernels_documentation_is_labelled_by_subsystem(tmp_path):
    from gpt2.prepare_labelled import read_source
    from lib.classify.settings import ClassifySettings

    doc = tmp_path / "linux" / "Documentation"
    for sub, n in (("networking", 3), ("filesystems", 2)):
        (doc / sub).mkdir(parents=True)
        for i in range(n):
            (doc / sub / f"{i}.rst").write_text(f"{sub} page {i}")
    (doc / "index.rst").write_text("the top page, in no subsystem")
    (doc / "translations" / "it_IT").mkdir(parents=True)
    (doc / "translations" / "it_IT" / "x.rst").write_text("tradotto")
    docs, ident = read_source(ClassifySettings(source="linuxdoc", path=str(doc)), str(tmp_path))
    assert sorted((d.label, d.text) for d in docs) == [
        ("filesystems", "filesystems page 0"),
        ("filesystems", "filesystems page 1"),
        ("networking", "networking page 0"),
        ("networking", "networking page 1"),
        ("networking", "networking page 2"),
    ]
    assert ident["source_id"] == str(doc.resolve())
