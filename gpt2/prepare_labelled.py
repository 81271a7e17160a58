"""Turn a labelled source into the classifier's corpus: DATA_DIR/classify/ (lib/classify/corpus.py).

    python -m gpt2.prepare_labelled                          # the source config.py names (CLASSIFY_*)
    python -m gpt2.prepare_labelled --classify-source file --classify-path reviews.csv
    python -m gpt2.prepare_labelled --classify-source fortunes --classify-path fortunes_1.99.1-7.3_all.deb
    make data                                                # the same, when CLASSIFY=y

Reads the documents (lib/classify/sources.py, or Hugging Face's IMDB and AG News through the
`datasets` package), splits them by class into train, validation and test (seeded, stratified,
whole distinct documents; lib/classify/splits.py), tokenizes them with GPT-2's BPE and writes one
token folder per class plus the test documents. A corpus already prepared from the same source
and settings is kept; anything else (another file, column, class list, seed or fraction, or a
changed file) prepares it again, whole.
"""

if __name__ == "__main__" and not __package__:  # `python3 gpt2/prepare_labelled.py`
    import _script  # gpt2/_script.py, beside this file

    _script.rerun_as_module("gpt2.prepare_labelled")


import argparse
import gzip
import logging
import os
import sys
from pathlib import Path

import tiktoken

from gpt2.prepare_data import (
    LINUXDOC_URL,
    _datasets,
    _linuxdoc_files,
    _linuxdoc_name,
    _local_or_download,
    gpt2_encoding,
    sha256_file,
)
from lib.classify.corpus import corpus_damage, corpus_dir, load_corpus_meta, stale_reason, write_corpus
from lib.classify.settings import ClassifySettings
from lib.classify.sources import (
    Document,
    LabelledDataError,
    read_class_folders,
    read_fortunes,
    read_table,
)
from lib.classify.splits import split_documents
from lib.config.cli import add_override_flags, overrides_from_args
from lib.config.load import load_settings, read_config_py
from lib.errors import Refusal
from lib.train.data import files_fingerprint
from lib.train.settings import Settings
from lib.train.stop import StopRequested, stop_at_once

log = logging.getLogger("prepare_labelled")

# Debian's fortunes (fortune-mod's data), bookworm: a real labelled corpus the project can fetch
# from a package registry and build offline; FORTUNES_SOURCE or CLASSIFY_PATH name a local copy.
FORTUNES_URL = "https://deb.debian.org/debian/pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb"
FORTUNES_SHA256 = "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
FORTUNES_ENV = "FORTUNES_SOURCE"
HF_SOURCES = {"imdb": "stanfordnlp/imdb", "agnews": "fancyzhx/ag_news"}


def _fingerprint(path: Path) -> str:
    """What changes when a local source does: the file's sha256, or a folder's files' stats."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return files_fingerprint(files)


def fortunes_path(c: ClassifySettings, data_dir: str) -> Path:
    """A local copy of Debian's fortunes (CLASSIFY_PATH, else FORTUNES_SOURCE), else the package
    downloaded once into DATA_DIR and checked against its sha256."""
    local = c.path or os.environ.get(FORTUNES_ENV, "") or None
    if local is not None and not Path(local).exists():
        raise LabelledDataError(f"{local}: no such file or folder (CLASSIFY_PATH or {FORTUNES_ENV})")
    cached = Path(data_dir) / "sources" / Path(FORTUNES_URL).name
    try:
        path, _ = _local_or_download("fortunes", local, FORTUNES_URL, cached)
    except SystemExit as e:  # prepare_data's own clear errors
        raise LabelledDataError(
            f"{str(e).removeprefix('error: ')} (Debian's fortunes: apt-get download fortunes, or "
            "/usr/share/games/fortunes)"
        ) from None
    if path == cached and (digest := sha256_file(cached)) != FORTUNES_SHA256:
        raise LabelledDataError(
            f"{cached} has sha256 {digest}, not {FORTUNES_SHA256}: delete it to download it again"
        )
    return path


def linuxdoc_documents(c: ClassifySettings, data_dir: str) -> tuple[list[Document], Path]:
    """The kernel's Documentation/<subsystem>/ files, one document each, labelled by the subsystem
    (files at Documentation/'s top and translations left out); from CLASSIFY_PATH, LINUXDOC_SOURCE,
    or the kernel tarball downloaded once."""
    local = c.path or os.environ.get("LINUXDOC_SOURCE", "") or None
    cached = Path(data_dir) / "sources" / Path(LINUXDOC_URL).name
    try:
        path, _ = _local_or_download("linuxdoc", local, LINUXDOC_URL, cached)
        files = list(_linuxdoc_files(path))
    except SystemExit as e:  # prepare_data's own clear errors
        raise LabelledDataError(str(e).removeprefix("error: ")) from None
    docs = []
    for name, data in files:
        rel = _linuxdoc_name(name)
        if "/" not in rel:
            continue
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8", errors="replace")
        if text.strip():
            docs.append(Document(text, rel.split("/")[0], f"{path}: Documentation/{rel}"))
    if not docs:
        raise LabelledDataError(f"{path}: no Documentation/<subsystem>/ files in it")
    return docs, path


def hf_documents(name: str) -> list[Document]:
    """IMDB or AG News from the Hugging Face hub: their train and test splits, labels by name."""
    datasets = _datasets(f"the {name} corpus")
    repo = HF_SOURCES[name]
    docs = []
    try:
        for split in ("train", "test"):
            ds = datasets.load_dataset(repo, split=split)
            names = ds.features["label"].names
            docs += [
                Document(
                    row["text"],
                    names[row["label"]],
                    f"hf://{repo}/{split}#{i}",
                    split if split == "test" else None,
                )
                for i, row in enumerate(ds)
            ]
    except (ConnectionError, OSError) as e:
        raise LabelledDataError(
            f"could not load {repo} from the Hugging Face hub ({e}); offline, export it to a CSV or JSONL "
            "file and use CLASSIFY_SOURCE_FILE"
        ) from None
    return docs


def read_source(c: ClassifySettings, data_dir: str) -> tuple[list[Document], dict]:
    """The source's documents, and what identifies it (for the corpus's staleness check)."""
    if c.source in HF_SOURCES:
        return hf_documents(c.source), {"source_id": f"hf://{HF_SOURCES[c.source]}"}
    if c.source in ("fortunes", "linuxdoc"):
        if c.source == "fortunes":
            path = fortunes_path(c, data_dir)
            docs = read_fortunes(path)
        else:
            docs, path = linuxdoc_documents(c, data_dir)
        return docs, {"source_id": str(path.resolve()), "source_fingerprint": _fingerprint(path)}
    path = Path(c.path)
    if not path.exists():
        raise LabelledDataError(f"{path}: no such file or folder (CLASSIFY_PATH, make classify DATA=...)")
    docs = read_class_folders(path) if path.is_dir() else read_table(path, c.text_column, c.label_column)
    ident = {"source_id": str(path.resolve()), "source_fingerprint": _fingerprint(path)}
    if path.is_file():
        ident.update(text_column=c.text_column, label_column=c.label_column)
    return docs, ident


def request_of(c: ClassifySettings, ident: dict) -> dict:
    """Everything that makes the corpus what it is: the source and the split's settings."""
    return {
        "source": c.source,
        **ident,
        "classes": c.class_names,
        "max_docs_per_class": c.max_docs_per_class,
        "val_fraction": c.val_fraction,
        "test_fraction": c.test_fraction,
        "keep_test_split": c.keep_test_split,
        "split_seed": c.split_seed,
    }


def prepare_labelled(s: Settings, *, force: bool = False) -> dict:
    """The corpus for `s.classify` in `s.data.data_dir`, prepared unless it already is; its meta."""
    c, data_dir = s.classify, s.data.data_dir
    docs, ident = read_source(c, data_dir)
    request = request_of(c, ident)
    meta = load_corpus_meta(data_dir)
    if meta is not None and not force:
        why = stale_reason(meta, request) or corpus_damage(data_dir, meta)
        if why is None:
            log.info(
                "%s is already prepared (%s); --force redoes it", corpus_dir(data_dir), ident["source_id"]
            )
            return meta
        log.info("%s: preparing again: %s", corpus_dir(data_dir), why)
    split = split_documents(
        docs,
        classes=c.class_names,
        val_fraction=c.val_fraction,
        test_fraction=c.test_fraction,
        seed=c.split_seed,
        max_per_class=c.max_docs_per_class,
        keep_test_split=c.keep_test_split,
    )
    enc = gpt2_encoding()
    extra = {
        "tokenizer": f"tiktoken gpt2 ({tiktoken.__version__})",
        "vocab_size": enc.n_vocab,
        "eot_token": enc.eot_token,
        "dtype": "uint16",
    }
    meta = write_corpus(data_dir, split, enc.encode_ordinary_batch, request, extra)
    describe(meta)
    return meta


def describe(meta: dict) -> None:
    """The corpus in a few log lines: classes, documents and tokens per split, notes."""
    log.info("%s documents (train/val/test): %s", meta["request"]["source_id"], meta["documents"])
    for c in meta["classes"]:
        log.info(
            "  %-20s %6d / %5d / %5d documents, %9d training tokens  -> %s/",
            c["name"],
            c["train_docs"],
            c["val_docs"],
            c["test_docs"],
            c["train_tokens"],
            c["folder"],
        )
    for note in meta["notes"]:
        log.warning("note: %s", note)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="config.py", help="read the settings from this config.py")
    p.add_argument("--force", action="store_true", help="prepare again even if already done")
    add_override_flags(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = Path(args.config)
        overrides = overrides_from_args(args, lambda: read_config_py(config) if config.is_file() else {})
        base = load_settings(config) if config.is_file() else Settings()
        s = base.replace(overrides) if overrides else base
        with stop_at_once():
            prepare_labelled(s, force=args.force)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StopRequested as e:  # the corpus is written whole or not at all (lib/classify/corpus.py)
        print(f"{e} received: stopped; nothing half-written is kept; run it again to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
