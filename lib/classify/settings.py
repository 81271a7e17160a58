"""The generative classifier's settings (plain data, no torch); Kconfig: lib/classify/Kconfig."""

import math
import re
from dataclasses import dataclass, field

from lib.fields import check, kc

SOURCES = ("fortunes", "linuxdoc", "imdb", "agnews", "file")
"""Where labelled documents come from: Debian's fortunes and the kernel's documentation by subsystem
(both offline through Debian's packages), two Hugging Face sets, a file or folder."""


def split_names(text: str) -> list[str]:
    """The class names of a comma-separated list, in its order, blanks dropped."""
    return [c.strip() for c in text.split(",") if c.strip()]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClassifySettings:
    """One GPT-2 per class on a labelled corpus, each document labelled by the likeliest model."""

    enabled: bool = field(default=False, metadata=kc("CLASSIFY", "--classify"))
    """Train one model per class (the test matrix, crossed with the classes) and score the test split."""
    source: str = field(default="fortunes", metadata=kc("CLASSIFY_SOURCE", "--classify-source"))
    """One of SOURCES."""
    path: str = field(default="", metadata=kc("CLASSIFY_PATH", "--classify-path"))
    """file: the CSV/TSV/JSONL file or the folder of class folders; fortunes, linuxdoc: a local copy
    (the Debian package, a kernel tarball or a folder; empty: downloaded); imdb/agnews: unused."""
    text_column: str = field(default="text", metadata=kc("CLASSIFY_TEXT_COLUMN"))
    """The column (or JSON key) holding each document's text."""
    label_column: str = field(default="label", metadata=kc("CLASSIFY_LABEL_COLUMN"))
    """The column (or JSON key) holding each document's class."""
    classes: str = field(default="", metadata=kc("CLASSIFY_CLASSES", "--classify-classes"))
    """Comma-separated class names to keep, in this order; empty: every class of the source."""
    max_docs_per_class: int = field(default=0, metadata=kc("CLASSIFY_MAX_DOCS_PER_CLASS"))
    """At most this many documents per class, drawn with the split seed before splitting; 0: all."""
    val_fraction: float = field(default=0.1, metadata=kc("CLASSIFY_VAL_FRACTION"))
    """Whole documents per class held out for each class model's validation loss."""
    test_fraction: float = field(default=0.2, metadata=kc("CLASSIFY_TEST_FRACTION"))
    """Whole documents per class never trained on; the accuracy is measured on them."""
    keep_test_split: bool = field(default=True, metadata=kc("CLASSIFY_KEEP_TEST_SPLIT"))
    """A source's own test split (IMDB's, AG News's, a folder's test/) stays the test split."""
    split_seed: int = field(default=1234, metadata=kc("CLASSIFY_SPLIT_SEED"))
    """Seeds the document splits, independently of the training seed."""
    # Scoring: read after training, so a resumed class model may change them.
    length_normalised: bool = field(
        default=False, metadata=kc("CLASSIFY_LENGTH_NORMALISED", "--length-normalised", resumable=True)
    )
    """Score by the mean log-probability per token (plus the log prior) instead of the sum."""
    prior: bool = field(default=True, metadata=kc("CLASSIFY_PRIOR", resumable=True))
    """Add the log of each class's share of the training documents."""
    stride: int = field(default=0, metadata=kc("CLASSIFY_STRIDE", resumable=True))
    """Tokens between the starts of a long document's windows; 0: half the block size."""
    score_batch: int = field(default=16, metadata=kc("CLASSIFY_SCORE_BATCH", resumable=True))
    """Windows per forward pass when scoring."""
    max_test_docs: int = field(default=0, metadata=kc("CLASSIFY_MAX_TEST_DOCS", resumable=True))
    """Score only the first this many test documents (a quick look); 0: all."""
    baseline: bool = field(default=True, metadata=kc("CLASSIFY_BASELINE", resumable=True))
    """Also fit tf-idf n-grams with logistic regression on the same split (needs scikit-learn)."""

    def __post_init__(self) -> None:
        check(self, "source", self.source in SOURCES, f"one of {', '.join(SOURCES)}")
        if self.enabled and self.source == "file":
            check(self, "path", self.path != "", "a CSV, TSV or JSONL file, or a folder of class folders")
        for name in ("text_column", "label_column"):
            check(self, name, getattr(self, name).strip() != "", "a column name")
        names = split_names(self.classes)
        check(self, "classes", len(names) == len(set(names)), "distinct class names")
        check(self, "max_docs_per_class", self.max_docs_per_class >= 0, "0 (all) or more")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            check(self, name, math.isfinite(value) and 0.0 < value < 0.5, "a number in (0, 0.5)")
        check(
            self,
            "test_fraction",
            self.val_fraction + self.test_fraction < 0.9,
            f"a number leaving training documents (CLASSIFY_VAL_FRACTION = {self.val_fraction:g} + this < 0.9)",
        )
        check(self, "split_seed", 0 <= self.split_seed < 2**31, "0..2147483647")
        check(self, "stride", self.stride >= 0, "0 (half the block) or a number of tokens")
        check(self, "score_batch", 1 <= self.score_batch <= 4096, "1..4096")
        check(self, "max_test_docs", self.max_test_docs >= 0, "0 (all) or more")

    @property
    def class_names(self) -> list[str]:
        return split_names(self.classes)


def class_folder(name: str) -> str:
    """A class name as a folder and run-name part: lowercase letters, digits, '-' (Sci/Tech -> sci-tech)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "class"
