"""The prepared labelled corpus on disk, under DATA_DIR/classify/:

    meta.json          the classes (name, folder, documents and tokens per split), the split's
                       settings, the source and its fingerprint, the tokenizer, the corpus id
    documents.jsonl    every document once: its split, its class and its text (the baseline reads it)
    test.bin           the test documents' tokens, one after another (uint16)
    test.json          where each test document starts, how many tokens it has, and its class
    <class>/           train.bin, val.bin and meta.json: the class's documents, each followed by
                       <|endoftext|>, as the trainer reads any token folder (--dataset classify)

Written to a temporary folder beside it and moved into place whole, so a reader sees the old
corpus or the new one, never a mix. Plain data: numpy and json, no torch.
"""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lib.classify.sources import LabelledDataError
from lib.classify.splits import SPLITS, Split
from lib.io import atomic_write_json

CORPUS_DIR = "classify"
META_FILE = "meta.json"
TOKEN_DTYPE = np.uint16
EOT = 50256


def corpus_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / CORPUS_DIR


def load_corpus_meta(data_dir: str | Path) -> dict | None:
    """The corpus's meta.json, or None when no (complete) corpus is prepared there."""
    path = corpus_dir(data_dir) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def require_corpus(data_dir: str | Path) -> dict:
    """The corpus's meta.json, or a LabelledDataError saying how to prepare it."""
    meta = load_corpus_meta(data_dir)
    if meta is None:
        raise LabelledDataError(
            f"no labelled corpus in {corpus_dir(data_dir)}: prepare it with make data (CLASSIFY=y), "
            "or python -m gpt2.prepare_labelled"
        )
    return meta


def stale_reason(meta: dict, request: dict) -> str | None:
    """Why the corpus `meta` describes is not the one `request` (the settings and source) asks for."""
    made = meta.get("request", {})
    for key in sorted(set(made) | set(request)):
        if made.get(key) != request.get(key):
            return f"it was made with {key} = {made.get(key)!r}, not {request.get(key)!r}"
    return None


def _write_tokens(path: Path, docs: list[list[int]], *, eot: bool) -> tuple[int, str]:
    """Each document's tokens (then <|endoftext|> when `eot`) into `path`; (tokens, sha256)."""
    arrays = [np.asarray(d + [EOT] if eot else d, dtype=TOKEN_DTYPE) for d in docs]
    data = np.concatenate(arrays) if arrays else np.zeros(0, dtype=TOKEN_DTYPE)
    path.write_bytes(data.tobytes())
    return int(len(data)), hashlib.sha256(data.tobytes()).hexdigest()


def write_corpus(
    data_dir: str | Path,
    split: Split,
    encode: Callable[[list[str]], list[list[int]]],
    request: dict,
    extra: dict,
) -> dict:
    """Tokenize `split` with `encode` and write the corpus under DATA_DIR/classify/; returns its meta."""
    root = corpus_dir(data_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{CORPUS_DIR}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        lines = [
            json.dumps({"split": s, "class": split.classes[c], "text": t}, ensure_ascii=False)
            for s in SPLITS
            for t, c in split.docs[s]
        ]
        text = "\n".join(lines) + "\n"
        (tmp / "documents.jsonl").write_text(text, encoding="utf-8")
        tokenizer = extra["tokenizer"]
        corpus_id = hashlib.sha256(f"{tokenizer}\n{text}".encode()).hexdigest()[:16]
        tokens = {s: encode([t for t, _ in split.docs[s]]) for s in SPLITS}
        classes = []
        for index, (name, folder) in enumerate(zip(split.classes, split.folders, strict=True)):
            (tmp / folder).mkdir()
            info = {"name": name, "folder": folder}
            class_meta = {"dataset": "classify", "class": name, "folder": folder, "corpus": corpus_id}
            for s in ("train", "val"):
                mine = [tok for tok, (_, c) in zip(tokens[s], split.docs[s], strict=True) if c == index]
                n, digest = _write_tokens(tmp / folder / f"{s}.bin", mine, eot=True)
                class_meta[f"{s}_tokens"], class_meta[f"{s}_sha256"] = n, digest
                info[f"{s}_docs"], info[f"{s}_tokens"] = len(mine), n
            test = [tok for tok, (_, c) in zip(tokens["test"], split.docs["test"], strict=True) if c == index]
            info["test_docs"], info["test_tokens"] = len(test), sum(len(t) for t in test)
            for key in ("tokenizer", "vocab_size", "eot_token", "dtype"):
                class_meta[key] = extra[key]
            atomic_write_json(tmp / folder / META_FILE, class_meta)
            classes.append(info)
        lengths = [len(t) for t in tokens["test"]]
        _write_tokens(tmp / "test.bin", tokens["test"], eot=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if lengths else []
        atomic_write_json(
            tmp / "test.json",
            {"labels": [c for _, c in split.docs["test"]], "offsets": offsets, "lengths": lengths},
        )
        meta = {
            "dataset": "classify",
            "corpus": corpus_id,
            "classes": classes,
            "documents": {s: len(split.docs[s]) for s in SPLITS},
            "dropped": split.dropped,
            "notes": split.notes,
            "request": request,
            **extra,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(tmp / META_FILE, meta)  # last: it marks a complete corpus
        old = root.parent / f".{CORPUS_DIR}-old-{os.getpid()}"
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def corpus_damage(data_dir: str | Path, meta: dict) -> str | None:
    """Which file of the prepared corpus is missing or not the size its meta.json promises, or None."""
    root = corpus_dir(data_dir)
    sizes = {root / "test.bin": sum(c["test_tokens"] for c in meta["classes"])}
    for c in meta["classes"]:
        for split in ("train", "val"):
            sizes[root / c["folder"] / f"{split}.bin"] = c[f"{split}_tokens"]
    for path, tokens in sizes.items():
        if not path.is_file() or path.stat().st_size != 2 * tokens:
            return f"{path} is missing or does not hold the {tokens} tokens meta.json promises"
    for path in [
        root / "test.json",
        root / "documents.jsonl",
        *(root / c["folder"] / META_FILE for c in meta["classes"]),
    ]:
        if not path.is_file():
            return f"{path} is missing"
    return None


def class_names(meta: dict) -> list[str]:
    return [c["name"] for c in meta["classes"]]


def class_folders(meta: dict) -> list[str]:
    return [c["folder"] for c in meta["classes"]]


def train_priors(meta: dict) -> np.ndarray:
    """Each class's share of the training documents."""
    counts = np.array([c["train_docs"] for c in meta["classes"]], dtype=np.float64)
    return counts / counts.sum()


def held_out_documents(data_dir: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The test documents' tokens (one array each) and their class indexes."""
    root = corpus_dir(data_dir)
    index = json.loads((root / "test.json").read_text())
    tokens = np.fromfile(root / "test.bin", dtype=TOKEN_DTYPE)
    expected = sum(index["lengths"])
    if len(tokens) != expected:
        raise LabelledDataError(
            f"{root / 'test.bin'} holds {len(tokens)} tokens, not the {expected} test.json lists; prepare "
            "the corpus again (make data)"
        )
    docs = [tokens[o : o + n] for o, n in zip(index["offsets"], index["lengths"], strict=True)]
    return docs, np.asarray(index["labels"], dtype=np.int64)


def documents(data_dir: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Every document's (text, class name), by split, as documents.jsonl holds them."""
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    with open(corpus_dir(data_dir) / "documents.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out[row["split"]].append((row["text"], row["class"]))
    return out
