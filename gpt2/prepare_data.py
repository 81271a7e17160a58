"""Turn a text corpus into GPT-2 BPE token files: <data-dir>/<dataset>/{train,val}.bin + meta.json.

    python gpt2/prepare_data.py                      # the dataset config.py names
    python gpt2/prepare_data.py --dataset shakespeare [--source input.txt]
    python gpt2/prepare_data.py --dataset finewebedu --max-tokens 100   # millions
    python gpt2/prepare_data.py --dataset custom --path corpus/          # .txt/.jsonl/.parquet

Tokens are uint16 (GPT-2 has 50257), documents are separated by <|endoftext|>,
and the last --val-fraction of the token stream is the validation split. Each
file is written to a temporary name and renamed into place; meta.json, written
last, marks a complete preparation.
"""

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

# Run as a script (python gpt2/prepare_data.py), the repository root is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lib.data import META_FILE, TOKEN_DTYPE, load_meta  # noqa: E402
from lib.io import atomic_write, atomic_write_json  # noqa: E402

log = logging.getLogger("prepare_data")

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# Streamed corpora: (Hugging Face dataset, config name, text column).
HF_DATASETS = {
    "finewebedu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "text"),
    "openwebtext": ("Skylion007/openwebtext", None, "text"),
    "tinystories": ("roneneldan/TinyStories", None, "text"),
}
CUSTOM_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
_ENCODE_BATCH = 256


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shakespeare_text(out_dir: Path, source: str | None) -> tuple[str, dict]:
    """The Tiny Shakespeare text, from `source` (a local copy) or downloaded; sha256-checked."""
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise SystemExit(f"error: --source {source}: no such file")
        origin = str(path.resolve())
    else:
        path = out_dir / "input.txt"
        origin = SHAKESPEARE_URL
        if not path.is_file():
            log.info("downloading %s", SHAKESPEARE_URL)
            try:
                with urllib.request.urlopen(SHAKESPEARE_URL, timeout=60) as r:
                    atomic_write(path, lambda f: shutil.copyfileobj(r, f))
            except OSError as e:
                raise SystemExit(
                    f"error: could not download {SHAKESPEARE_URL}: {e}. Offline, pass a local "
                    "copy with --source PATH (or SHAKESPEARE_SOURCE=PATH to make)."
                ) from None
    digest = sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        raise SystemExit(
            f"error: {path} has sha256 {digest}, expected {SHAKESPEARE_SHA256} (Tiny "
            "Shakespeare, 1,115,394 bytes). Delete it to download again, or pass the right file."
        )
    return path.read_text(encoding="utf-8"), {"source": origin, "source_sha256": digest}


def _custom_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CUSTOM_SUFFIXES)
    else:
        raise SystemExit(f"error: custom dataset path {str(path)!r} does not exist")
    bad = [p for p in files if p.suffix not in CUSTOM_SUFFIXES]
    if bad or not files:
        raise SystemExit(
            f"error: {path}: need .txt, .jsonl/.json or .parquet files "
            f"({'found ' + bad[0].name if bad else 'found none'})"
        )
    return files


def custom_documents(path: Path) -> Iterator[str]:
    """Documents of a local corpus: a .txt file is one document; .jsonl/.parquet rows' "text"."""
    import datasets

    for file in _custom_files(path):
        if file.suffix == ".txt":
            yield file.read_text(encoding="utf-8")
            continue
        kind = "parquet" if file.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=str(file), split="train", streaming=True)
        for row in ds:
            if "text" not in row:
                raise SystemExit(f"error: {file}: rows need a 'text' field; found {sorted(row)}")
            yield row["text"]


def hf_documents(name: str) -> Iterator[str]:
    """Documents streamed from the Hugging Face hub (needs network access)."""
    import datasets

    repo, config, column = HF_DATASETS[name]
    try:
        ds = datasets.load_dataset(repo, name=config, split="train", streaming=True)
        for row in ds:
            yield row[column]
    except (ConnectionError, OSError) as e:
        raise SystemExit(f"error: could not stream {repo} from the Hugging Face hub: {e}") from None


def encode_documents(docs: Iterable[str], out: Path, max_tokens: int | None, desc: str) -> int:
    """Append the tokens of each document, then <|endoftext|>, to `out`; stop at max_tokens."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    total = 0
    batch: list[str] = []
    with open(out, "wb") as f, tqdm(total=max_tokens, unit="tok", unit_scale=True, desc=desc) as bar:

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
    """Split the token stream into train.bin (first part) and val.bin (the tail), atomically."""
    tokens = np.memmap(all_tokens, dtype=TOKEN_DTYPE, mode="r")
    n_val = max(1, int(len(tokens) * val_fraction))
    parts = {"train": tokens[: len(tokens) - n_val], "val": tokens[len(tokens) - n_val :]}
    info = {}
    for split, arr in parts.items():
        path = out_dir / f"{split}.bin"
        atomic_write(path, lambda f, arr=arr: f.write(memoryview(np.ascontiguousarray(arr))))
        info[f"{split}_tokens"] = int(len(arr))
        info[f"{split}_sha256"] = sha256_file(path)
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

    out_dir = data_dir / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict = {"dataset": dataset}
    cap = None
    if dataset == "shakespeare":
        text, origin = shakespeare_text(out_dir, source)
        docs: Iterable[str] = [text]
        meta.update(origin)
    elif dataset == "custom":
        if not path:
            raise SystemExit("error: --dataset custom needs --path (a file or folder)")
        docs = custom_documents(Path(path))
        meta["source"] = str(Path(path).resolve())
        cap = max_tokens_millions * 1_000_000
    elif dataset in HF_DATASETS:
        docs = hf_documents(dataset)
        meta["source"] = f"hf://{HF_DATASETS[dataset][0]}"
        meta["hf_config"] = HF_DATASETS[dataset][1]
        cap = max_tokens_millions * 1_000_000
    else:
        known = ", ".join(["shakespeare", "custom", *HF_DATASETS])
        raise SystemExit(f"error: unknown dataset {dataset!r}; choose one of {known}")

    start = time.time()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".prepare-") as tmp:
        all_tokens = Path(tmp) / "all.bin"
        n = encode_documents(docs, all_tokens, cap, desc=f"tokenizing {dataset}")
        if n < 2:
            raise SystemExit(f"error: {dataset}: the corpus produced {n} tokens; nothing to train on")
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
    p.add_argument("--dataset", help="shakespeare, finewebedu, openwebtext, tinystories, custom")
    p.add_argument("--source", help="shakespeare: a local copy of input.txt instead of downloading")
    p.add_argument("--path", help="custom: a .txt/.jsonl/.parquet file or a folder of them")
    p.add_argument("--data-dir", help="output root (default: DATA_DIR, 'data')")
    p.add_argument("--max-tokens", type=int, help="token cap in millions for streamed corpora")
    p.add_argument("--val-fraction", type=float, help="fraction of tokens held out (0, 0.5]")
    p.add_argument("--force", action="store_true", help="prepare again even if already done")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from lib.settings import DataSettings, SettingsError, load_settings

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
        print(f"error: {e} (prepare_data.py: --path, --max-tokens, --val-fraction)", file=sys.stderr)
        return 2
    meta = load_meta(data.token_dir)
    if meta is not None and not args.force:
        print(f"{data.token_dir} is already prepared ({json.dumps(meta['source'])}); --force redoes it")
        return 0
    prepare(
        data.dataset,
        Path(data.data_dir),
        source=args.source,
        path=data.custom_path,
        max_tokens_millions=data.max_tokens_millions,
        val_fraction=data.val_fraction,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
