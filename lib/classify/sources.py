"""Labelled documents from local sources: CSV, TSV and JSONL files, a folder per class, and the
fortune cookies Debian ships (its `fortunes` package, or the folder it installs).

Every reader returns `Document`s in the order the source holds them, or raises
`LabelledDataError` naming the file and line and what to change: a missing column, an empty text
or label, bytes that are not UTF-8. Hugging Face sets are read in gpt2/prepare_labelled.py.
"""

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.errors import Refusal
from lib.io import deb_data_tar

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": None, ".ndjson": None}
# Debian's fortunes: one category per file in this folder; .dat/.u8 are strfile's indexes and links.
FORTUNES_DIR = "usr/share/games/fortunes"
FORTUNES_SKIPPED = (".dat", ".u8")


class LabelledDataError(Refusal, ValueError):
    """A labelled source that cannot become a corpus as it is; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Document:
    """One labelled document."""

    text: str
    label: str
    where: str
    """file:line (or file) it came from, for messages."""
    given_split: str | None = None
    """'test' when the source comes split and this document is in its test part."""


def _text(path: Path, data: bytes) -> str:
    """`data` decoded as UTF-8, or an error naming the file, the line and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LabelledDataError(
            f"{path}: line {line} is not UTF-8 text (byte {e.start} is {data[e.start : e.start + 1]!r}). "
            "Convert the file (iconv -f latin1 -t utf-8 in > out) or fix that line."
        ) from None


def read_table(path: str | Path, text_column: str, label_column: str) -> list[Document]:
    """The rows of a .csv/.tsv (header row) or .jsonl file: text and label from the named columns."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise LabelledDataError(
            f"{path}: not a table this reads ({', '.join(TABLE_SUFFIXES)}); a folder of class folders "
            "works too"
        )
    text = _text(path, path.read_bytes())
    delimiter = TABLE_SUFFIXES[path.suffix.lower()]
    rows: list[tuple[int, dict]] = []
    if delimiter is None:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise LabelledDataError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise LabelledDataError(f"{path}:{lineno}: not a JSON object")
            rows.append((lineno, row))
    else:
        csv.field_size_limit(sys.maxsize)  # reviews and articles can be long
        reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
        header = reader.fieldnames or []
        for name, what in ((text_column, "CLASSIFY_TEXT_COLUMN"), (label_column, "CLASSIFY_LABEL_COLUMN")):
            if name not in header:
                raise LabelledDataError(
                    f"{path}: no column {name!r} in its header (columns: {', '.join(header) or 'none'}); "
                    f"set {what}"
                )
        rows = [(reader.line_num, row) for row in reader]
    docs = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        for name, what in ((text_column, "CLASSIFY_TEXT_COLUMN"), (label_column, "CLASSIFY_LABEL_COLUMN")):
            if name not in row:
                raise LabelledDataError(f"{where}: no {name!r} field ({what}); it has {', '.join(row)}")
        body, label = row[text_column], row[label_column]
        body = "" if body is None else str(body)
        label = "" if label is None else str(label).strip()
        if not body.strip():
            raise LabelledDataError(f"{where}: empty text; remove the row or give it text")
        if not label:
            raise LabelledDataError(f"{where}: empty label; every document needs its class")
        docs.append(Document(body, label, where))
    if not docs:
        raise LabelledDataError(f"{path}: no rows")
    return docs


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_class_folders(path: str | Path) -> list[Document]:
    """A folder of class folders of .txt files (the aclImdb/train/pos/*.txt layout), one document
    per file, the folder's name its label. With train/ and test/ inside, test/ is the test split."""
    path = Path(path)
    parts = [(path / "train", None), (path / "test", "test")]
    if not all(p.is_dir() and _class_folders(p) for p, _ in parts):
        parts = [(path, None)]
    docs = []
    for root, split in parts:
        for folder in _class_folders(root):
            for file in sorted(folder.glob("*.txt")):
                body = _text(file, file.read_bytes())
                if not body.strip():
                    raise LabelledDataError(f"{file}: empty text; remove the file or give it text")
                docs.append(Document(body, folder.name, str(file), split))
    if not docs:
        raise LabelledDataError(
            f"{path}: no <class>/*.txt files (a folder per class, each holding one .txt per document)"
        )
    return docs


def _fortune_entries(name: str, data: bytes) -> list[Document]:
    """The cookies of one fortune file: entries separated by lines holding only '%'."""
    text = _text(Path(name), data)
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current).strip())
    label = Path(name).name
    return [Document(e, label, f"{name} #{i + 1}") for i, e in enumerate(entries) if e]


def read_fortunes(path: str | Path) -> list[Document]:
    """Debian's fortunes by category: its package (.deb) or its fortunes folder; the offensive
    ones (the off/ folder, rot13) and strfile's indexes are left out."""
    path = Path(path)
    docs: list[Document] = []
    if path.is_dir():
        folder = path / FORTUNES_DIR if (path / FORTUNES_DIR).is_dir() else path
        for file in sorted(folder.iterdir()):
            if file.is_file() and not file.is_symlink() and file.suffix not in FORTUNES_SKIPPED:
                docs += _fortune_entries(str(file), file.read_bytes())
    elif path.is_file():
        with deb_data_tar(path) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                inside = member.name.lstrip("./")
                if (
                    member.isfile()
                    and str(Path(inside).parent) == FORTUNES_DIR
                    and Path(inside).suffix not in FORTUNES_SKIPPED
                ):
                    docs += _fortune_entries(inside, archive.extractfile(member).read())
    else:
        raise LabelledDataError(f"{path}: no such file or folder (the fortunes .deb or its folder)")
    if not docs:
        raise LabelledDataError(
            f"{path}: no fortunes in it; give Debian's 'fortunes' package (.deb) or the folder it "
            f"installs (/{FORTUNES_DIR})"
        )
    return docs
