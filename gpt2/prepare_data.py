"""Turn a text corpus into GPT-2 BPE token files: <data-dir>/<dataset>/{train,val}.bin + meta.json.

    python -m gpt2.prepare_data                      # the dataset config.py names
    python -m gpt2.prepare_data --dataset shakespeare [--source input.txt]
    python -m gpt2.prepare_data --dataset linuxdoc [--source linux-6.1.tar.xz]   # or a .deb, a folder
    python -m gpt2.prepare_data --dataset finewebedu --max-tokens 100   # millions
    python -m gpt2.prepare_data --dataset custom --path corpus/          # .txt/.jsonl/.parquet

Tokens are uint16 (GPT-2 has 50257), documents are separated by <|endoftext|>,
and the last --val-fraction of the token stream is the validation split. Each
file is written to a temporary name and renamed into place; meta.json, written
last, marks a complete preparation.
"""

if (
    __name__ == "__main__" and not __package__
):  # `python3 gpt2/prepare_data.py` or `cd gpt2 && python3 prepare_data.py`
    import _script  # gpt2/_script.py, beside this file

    _script.rerun_as_module("gpt2.prepare_data")


import argparse
import gzip
import json
import logging
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.errors import Refusal
from lib.io import atomic_write, atomic_write_json, deb_data_tar
from lib.train.data import (
    META_FILE,
    TOKEN_DTYPE,
    DataError,
    altered,
    custom_files,
    damage,
    files_fingerprint,
    load_meta,
    sha256_file,
    stale_reason,
)
from lib.train.stop import StopRequested, stop_at_once

log = logging.getLogger("prepare_data")

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# The Linux kernel's documentation: real English prose (technical), about 8.4M GPT-2 tokens.
LINUXDOC_URL = "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.tar.xz"
LINUXDOC_SUFFIXES = (".rst", ".txt")
LINUXDOC_SHUFFLE_SEED = 1337
# Local copies, for machines without network access (a --source flag wins).
SOURCE_ENV = {
    "shakespeare": "SHAKESPEARE_SOURCE",
    "linuxdoc": "LINUXDOC_SOURCE",
    "fortunes": "FORTUNES_SOURCE",
}

# Streamed corpora: (Hugging Face dataset, config name, text column).
HF_DATASETS = {
    "finewebedu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "text"),
    "openwebtext": ("Skylion007/openwebtext", None, "text"),
    "tinystories": ("roneneldan/TinyStories", None, "text"),
}
_ENCODE_BATCH = 256


def _local_or_download(dataset: str, source: str | None, url: str, cached: Path) -> tuple[Path, str]:
    """`source` (checked) or else `url` downloaded once to `cached`; returns (path, origin)."""
    if source is not None:
        path = Path(source)
        if not path.exists():
            raise SystemExit(f"error: --source {source}: no such file or folder")
        return path, str(path.resolve())
    if not cached.is_file():
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                atomic_write(cached, lambda f: shutil.copyfileobj(r, f))
        except OSError as e:
            raise SystemExit(
                f"error: could not download {url}: {e}. Offline, pass a local copy with "
                f"--source PATH (or {SOURCE_ENV[dataset]}=PATH to make)."
            ) from None
    return cached, url


def shakespeare_text(out_dir: Path, source: str | None) -> tuple[str, dict]:
    """The Tiny Shakespeare text, from `source` (a local copy) or downloaded; sha256-checked."""
    path, origin = _local_or_download("shakespeare", source, SHAKESPEARE_URL, out_dir / "input.txt")
    if not path.is_file():
        raise SystemExit(f"error: --source {source}: not a file (Tiny Shakespeare's input.txt)")
    digest = sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        raise SystemExit(
            f"error: {path} has sha256 {digest}, expected {SHAKESPEARE_SHA256} (Tiny "
            "Shakespeare, 1,115,394 bytes). Delete it to download again, or pass the right file."
        )
    return path.read_text(encoding="utf-8"), {"source": origin, "source_sha256": digest}


def _linuxdoc_name(name: str) -> str | None:
    """The path under Documentation/ of a prose file worth keeping, else None."""
    name = name.replace(os.sep, "/")
    if name.endswith(".gz"):  # Debian's linux-doc package gzips its files
        name = name[:-3]
    head, sep, rel = ("/" + name.lstrip("./")).partition("/Documentation/")
    if not sep or rel.startswith("translations/") or not rel.endswith(LINUXDOC_SUFFIXES):
        return None
    return rel


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """lib/io.deb_data_tar, its refusal as this command's error exit."""
    try:
        return deb_data_tar(path)
    except Refusal as e:
        raise SystemExit(f"error: {e}") from None


def _linuxdoc_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file in a kernel tarball, a Debian linux-doc package or a folder."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and _linuxdoc_name(str(p.relative_to(path.parent))):
                yield str(p.relative_to(path.parent)), p.read_bytes()
        return
    try:
        archive = _deb_data_tar(path) if path.suffix == ".deb" else tarfile.open(path, mode="r:*")
    except tarfile.TarError as e:
        raise SystemExit(f"error: {path}: not a readable tar archive ({e})") from None
    with archive:
        for member in archive:
            if member.isfile() and _linuxdoc_name(member.name):
                yield member.name, archive.extractfile(member).read()


def linuxdoc_documents(out_dir: Path, source: str | None) -> tuple[list[str], dict]:
    """The kernel's Documentation/*.rst and *.txt (translations left out), one document each.

    Shuffled with a fixed seed, so that the validation split (the tail of the token stream) is a
    random sample of documents rather than the alphabetically last subsystems.
    """
    path, origin = _local_or_download("linuxdoc", source, LINUXDOC_URL, out_dir / Path(LINUXDOC_URL).name)
    docs: dict[str, str] = {}
    for name, data in tqdm(_linuxdoc_files(path), desc="reading Documentation/", unit=" files"):
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        docs[_linuxdoc_name(name)] = data.decode("utf-8", errors="replace")
    if not docs:
        raise SystemExit(
            f"error: {path}: no Documentation/*.rst or *.txt files in it; pass a kernel source "
            "tarball, Debian's linux-doc-<version> package, or a kernel tree / Documentation folder"
        )
    order = sorted(docs)
    random.Random(LINUXDOC_SHUFFLE_SEED).shuffle(order)
    meta = {"source": origin, "documents": len(order), "shuffle_seed": LINUXDOC_SHUFFLE_SEED}
    if path.is_file():
        meta["source_sha256"] = sha256_file(path)
    return [docs[name] for name in order], meta


def custom_documents(files: list[Path]) -> Iterator[str]:
    """Documents of a local corpus: a .txt file is one document; .jsonl/.parquet rows' "text"."""
    for file in files:
        if file.suffix == ".txt":
            try:
                yield file.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise SystemExit(
                    f"error: {file}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}). "
                    "Convert it (e.g. iconv -f latin1 -t utf-8 in > out) or remove it from the corpus."
                ) from None
            continue
        datasets = _datasets(f"{file.name} (a .{file.suffix.lstrip('.')} file)")
        kind = "parquet" if file.suffix == ".parquet" else "json"
        try:
            ds = datasets.load_dataset(kind, data_files=str(file), split="train", streaming=True)
            for row in ds:
                if "text" not in row:
                    raise SystemExit(f"error: {file}: rows need a 'text' field; found {sorted(row)}")
                yield row["text"]
        except (UnicodeDecodeError, ValueError) as e:  # a damaged or mis-encoded .jsonl/.parquet
            raise SystemExit(f"error: {file}: not readable as {kind} ({type(e).__name__}: {e})") from None


def _datasets(what: str):
    """The `datasets` package, or a clear exit saying how to install it (an optional dependency)."""
    try:
        import datasets
    except ImportError:
        raise SystemExit(
            f"error: reading {what} needs the `datasets` package: pip install -e '.[data]' "
            "(or make EXTRAS=dev,data); plain .txt corpora, Shakespeare and linuxdoc need nothing more"
        ) from None
    return datasets


def hf_documents(name: str) -> Iterator[str]:
    """Documents streamed from the Hugging Face hub (needs network access)."""
    datasets = _datasets(f"the {name} corpus")

    repo, config, column = HF_DATASETS[name]
    try:
        ds = datasets.load_dataset(repo, name=config, split="train", streaming=True)
        for row in ds:
            yield row[column]
    except (ConnectionError, OSError) as e:
        raise SystemExit(f"error: could not stream {repo} from the Hugging Face hub: {e}") from None


def gpt2_encoding():
    """tiktoken's GPT-2 BPE, or a clear exit when its files can be neither found nor downloaded."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests' errors, blobfile's, a corrupt cache: all mean the same here
        raise SystemExit(
            f"error: could not load the GPT-2 tokenizer's files (vocab.bpe, encoder.json): "
            f"{type(e).__name__}. tiktoken downloads them once; offline, point TIKTOKEN_CACHE_DIR at a "
            "folder holding its cached copies (make TIKTOKEN_CACHE_DIR=/path/to/cache, or export it)."
        ) from None


def encode_documents(
    docs: Iterable[str], out: Path, max_tokens: int | None, desc: str, bar_total: int | None = None
) -> int:
    """Append the tokens of each document, then <|endoftext|>, to `out`; stop at max_tokens.

    The progress bar counts tokens toward `bar_total` (a streamed corpus's cap), or without a
    total (and so without a made-up ETA) when the corpus's size in tokens is unknown.
    """
    enc = gpt2_encoding()
    total = 0
    batch: list[str] = []
    with open(out, "wb") as f, tqdm(total=bar_total, unit="tok", unit_scale=True, desc=desc) as bar:

        def flush() -> bool:
            nonlocal total
            for ids in enc.encode_ordinary_batch(batch):
                ids.append(enc.eot_token)
                if max_tokens is not None:
                    ids = ids[: max_tokens - total]
                np.asarray(ids, dtype=TOKEN_DTYPE).tofile(f)
                total += len(ids)
                bar.update(len(ids))
                if max_tokens is not None and total >= max_tokens:
                    return True
            batch.clear()
            return False

        for doc in docs:
            batch.append(doc)
            if len(batch) == _ENCODE_BATCH and flush():
                return total
        if batch:
            flush()
    return total


def split_and_write(all_tokens: Path, out_dir: Path, val_fraction: float) -> dict:
    """Split the token stream into train.bin (first part) and val.bin (the tail).

    Both are written beside the stream first; only then is the old meta.json removed and the
    two files renamed into place, so a crash leaves either the old preparation or one that
    meta.json does not vouch for (and the next `make data` redoes).
    """
    tokens = np.memmap(all_tokens, dtype=TOKEN_DTYPE, mode="r")
    n_val = max(1, int(len(tokens) * val_fraction))
    parts = {"train": tokens[: len(tokens) - n_val], "val": tokens[len(tokens) - n_val :]}
    info, ready = {}, {}
    for split, arr in parts.items():
        ready[split] = all_tokens.with_name(f"{split}.bin")
        atomic_write(ready[split], lambda f, arr=arr: f.write(memoryview(np.ascontiguousarray(arr))))
        info[f"{split}_tokens"] = int(len(arr))
        info[f"{split}_sha256"] = sha256_file(ready[split])
    (out_dir / META_FILE).unlink(missing_ok=True)
    for split, path in ready.items():
        os.replace(path, out_dir / f"{split}.bin")
    return info


def prepare(
    dataset: str,
    data_dir: Path,
    *,
    source: str | None = None,
    path: str | None = None,
    max_tokens_millions: int = 1000,
    val_fraction: float = 0.1,
) -> Path:
    """Prepare one dataset's token files; returns the folder holding them."""
    import tiktoken

    gpt2_encoding()  # fail before any download or reading when the tokenizer cannot load
    out_dir = data_dir / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict = {"dataset": dataset}
    cap = None
    if dataset == "shakespeare":
        text, origin = shakespeare_text(out_dir, source)
        docs: Iterable[str] = [text]
        meta.update(origin)
    elif dataset == "linuxdoc":
        docs, origin = linuxdoc_documents(out_dir, source)
        meta.update(origin)
    elif dataset == "custom":
        if not path:
            raise SystemExit(
                "error: --dataset custom needs --path (a file or folder; GPT2_CUSTOM_DATASET_PATH)"
            )
        try:
            files = custom_files(Path(path))
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        docs = custom_documents(files)
        meta["source"] = str(Path(path).resolve())
        meta["source_fingerprint"] = files_fingerprint(files)
        meta["source_files"] = len(files)
        cap = max_tokens_millions * 1_000_000
    elif dataset in HF_DATASETS:
        docs = hf_documents(dataset)
        meta["source"] = f"hf://{HF_DATASETS[dataset][0]}"
        meta["hf_config"] = HF_DATASETS[dataset][1]
        cap = max_tokens_millions * 1_000_000
    else:
        known = ", ".join(["shakespeare", "linuxdoc", "custom", *HF_DATASETS])
        raise SystemExit(f"error: unknown dataset {dataset!r}; choose one of {known}")

    start = time.time()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-") as tmp:
        all_tokens = Path(tmp) / "all.bin"
        bar_total = cap if dataset in HF_DATASETS else None  # streamed: the cap is where it stops
        n = encode_documents(docs, all_tokens, cap, desc=f"tokenizing {dataset}", bar_total=bar_total)
        if n < 2 + 1:  # at least one token of text and its end-of-text marker in each split
            raise SystemExit(
                f"error: {dataset}: the corpus produced {max(0, n - 1)} tokens of text; nothing to train on "
                f"({meta['source']})"
            )
        meta.update(split_and_write(all_tokens, out_dir, val_fraction))
    meta.update(
        tokenizer=f"tiktoken gpt2 ({tiktoken.__version__})",
        vocab_size=50257,
        eot_token=50256,
        dtype="uint16",
        val_fraction=val_fraction,
        max_tokens=cap,
        seconds=round(time.time() - start, 1),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    atomic_write_json(out_dir / META_FILE, meta)
    log.info("%s: %d train + %d val tokens in %s", dataset, meta["train_tokens"], meta["val_tokens"], out_dir)
    return out_dir


def _pick(flag, default):
    return default if flag is None else flag


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="config.py", help="read defaults from this config.py")
    p.add_argument("--dataset", help="shakespeare, linuxdoc, finewebedu, openwebtext, tinystories, custom")
    p.add_argument(
        "--source",
        help="a local copy instead of downloading: shakespeare's input.txt (or SHAKESPEARE_SOURCE);\n"
        "linuxdoc: a kernel tarball, Debian's linux-doc package or a folder (or LINUXDOC_SOURCE)",
    )
    p.add_argument("--path", help="custom: a .txt/.jsonl/.parquet file or a folder of them")
    p.add_argument("--data-dir", help="output root (default: DATA_DIR, 'data')")
    p.add_argument("--max-tokens", type=int, help="token cap in millions for streamed corpora")
    p.add_argument("--val-fraction", type=float, help="fraction of tokens held out (0, 0.5]")
    p.add_argument("--force", action="store_true", help="prepare again even if already done")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from lib.config.load import load_settings
    from lib.train.settings import DataSettings, SettingsError

    if not args.dataset and Path(args.config).is_file():
        try:
            settings = load_settings(args.config)
        except SettingsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if (
            settings.classify.enabled
        ):  # the generative classifier's labelled corpus (gpt2/prepare_labelled.py)
            from gpt2.prepare_labelled import prepare_labelled

            try:
                prepare_labelled(settings, force=args.force)
            except Refusal as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            return 0
    try:
        base = load_settings(args.config).data if Path(args.config).is_file() else DataSettings()
        dataset = args.dataset or base.dataset
        data = DataSettings(
            dataset=dataset,
            custom_path=args.path or (base.custom_path if dataset == base.dataset else ""),
            max_tokens_millions=_pick(args.max_tokens, base.max_tokens_millions),
            val_fraction=_pick(args.val_fraction, base.val_fraction),
            data_dir=args.data_dir or base.data_dir,
        )
    except SettingsError as e:
        hint = (
            " (prepare_data.py: --path, --max-tokens, --val-fraction)" if str(e).startswith("data.") else ""
        )
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    meta = load_meta(data.token_dir)
    if meta is not None and not args.force:
        try:
            why = (
                damage(data.token_dir, meta)
                or stale_reason(meta, data.dataset, **data.token_check())
                or altered(data.token_dir, meta)
            )
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if why is None:
            print(f"{data.token_dir} is already prepared ({json.dumps(meta['source'])}); --force redoes it")
            return 0
        if data.dataset == "custom" and not data.custom_path:
            print(
                f"error: the custom tokens in {data.token_dir} must be prepared again ({why}); name the "
                "corpus with --path (GPT2_CUSTOM_DATASET_PATH)",
                file=sys.stderr,
            )
            return 2
        print(f"{data.token_dir}: preparing again: {why}")
    elif meta is None and data.dataset == "custom" and not data.custom_path:
        print(
            f"error: no custom tokens in {data.token_dir} yet; name the corpus with --path (or set "
            "GPT2_CUSTOM_DATASET_PATH in make menuconfig)",
            file=sys.stderr,
        )
        return 2
    try:
        with stop_at_once():
            prepare(
                data.dataset,
                Path(data.data_dir),
                source=args.source or os.environ.get(SOURCE_ENV.get(data.dataset, ""), "") or None,
                path=data.custom_path,
                max_tokens_millions=data.max_tokens_millions,
                val_fraction=data.val_fraction,
            )
    except StopRequested as e:
        print(f"{e} received: stopped; {stopped_note(data.token_dir)}", file=sys.stderr)
        return 130
    return 0


def stopped_note(token_dir: Path) -> str:
    """What a stopped preparation left: its temporary files are gone, and a folder meta.json does not
    vouch for is prepared again by the next run."""
    state = "the earlier token files stand" if load_meta(token_dir) else "nothing usable was written"
    return f"its temporary files are removed and {state}; run it again to finish ({token_dir})"


if __name__ == "__main__":
    sys.exit(main())
