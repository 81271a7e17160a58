"""Seeded, stratified splits of whole documents into train, validation and test.

Each class is split on its own (stratified), from an order drawn from the split seed and the
class's name, so the same corpus and seed give the same splits anywhere and a class's split does
not depend on the others. A text that occurs more than once is one document (kept once, or left
out when its copies disagree on the label), so no document can land in two splits.
"""

import hashlib
import random
from dataclasses import dataclass, field

from lib.classify.settings import class_folder
from lib.classify.sources import Document, LabelledDataError

SPLITS = ("train", "val", "test")
IMBALANCE_WARNING = 5.0
"""A largest-to-smallest ratio of training documents above which the split notes a warning."""


@dataclass
class Split:
    """The classes (in report order, with their folder names) and each split's (text, class) pairs."""

    classes: list[str]
    folders: list[str]
    docs: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, list[int]]:
        """Documents per class in each split."""
        out = {s: [0] * len(self.classes) for s in SPLITS}
        for split, pairs in self.docs.items():
            for _, label in pairs:
                out[split][label] += 1
        return out


def _key(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


def distinct(docs: list[Document]) -> tuple[list[Document], dict[str, int]]:
    """Each text once: a repeated text keeps its first copy (a test copy first, so a document in a
    source's own test split never also trains), and one whose copies disagree on the label is left
    out. Returns the documents and how many copies of each kind were dropped."""
    by_key: dict[str, list[Document]] = {}
    for d in docs:
        by_key.setdefault(_key(d.text), []).append(d)
    kept, dropped = [], {"repeated": 0, "conflicting labels": 0}
    for copies in by_key.values():
        if len({d.label for d in copies}) > 1:
            dropped["conflicting labels"] += len(copies)
            continue
        first = next((d for d in copies if d.given_split == "test"), copies[0])
        kept.append(first)
        dropped["repeated"] += len(copies) - 1
    order = {id(d): i for i, d in enumerate(docs)}
    kept.sort(key=lambda d: order[id(d)])
    return kept, {k: v for k, v in dropped.items() if v}


def split_documents(
    docs: list[Document],
    *,
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_per_class: int = 0,
    keep_test_split: bool = True,
) -> Split:
    """Stratified train/val/test splits of distinct documents; LabelledDataError when it cannot be done."""
    present = sorted({d.label for d in docs})
    if classes:
        missing = [c for c in classes if c not in present]
        if missing:
            raise LabelledDataError(
                f"CLASSIFY_CLASSES names {', '.join(repr(c) for c in missing)}, which the source does not "
                f"have; its classes: {', '.join(present)}"
            )
        order = list(classes)
    else:
        order = present
    if len(order) < 2:
        raise LabelledDataError(
            f"one class only ({order[0]!r}): a classifier needs two or more (check the label column, "
            "CLASSIFY_LABEL_COLUMN, or CLASSIFY_CLASSES)"
            if order
            else "no labelled documents"
        )
    folders = [class_folder(c) for c in order]
    if len(set(folders)) < len(folders):
        raise LabelledDataError(f"classes {order} give the same folder names {folders}; rename one")
    wanted = set(order)
    docs, dropped = distinct([d for d in docs if d.label in wanted])
    given = keep_test_split and any(d.given_split == "test" for d in docs)
    if given:
        trained = {d.label for d in docs if d.given_split != "test"}
        unseen = [c for c in order if c not in trained]
        if unseen:
            raise LabelledDataError(
                f"class{'es' * (len(unseen) > 1)} {', '.join(repr(c) for c in unseen)} appear only in the "
                "source's test split, so no model could learn them; leave them out with CLASSIFY_CLASSES, or "
                "say N to CLASSIFY_KEEP_TEST_SPLIT to split every document anew"
            )
    result = Split(order, folders, {s: [] for s in SPLITS}, dropped=dropped)
    for index, name in enumerate(order):
        mine = [d for d in docs if d.label == name]
        rng = random.Random(f"{seed}:{name}")
        pool = [d for d in mine if not (given and d.given_split == "test")]
        test = [d for d in mine if given and d.given_split == "test"]
        rng.shuffle(pool)
        rng.shuffle(test)
        if max_per_class:
            if given:  # the cap keeps the test split's share
                n_test = min(len(test), max(1, round(max_per_class * test_fraction)))
                test, pool = test[:n_test], pool[: max_per_class - n_test]
            else:
                pool = pool[:max_per_class]
        n = len(pool) + len(test)
        if not given:
            n_test = max(1, round(test_fraction * n))
            test, pool = pool[:n_test], pool[n_test:]
        n_val = max(1, round(val_fraction * n))
        val, train = pool[:n_val], pool[n_val:]
        if not train or not test:
            raise LabelledDataError(
                f"class {name!r} has {n} document{'s' * (n != 1)}, too few for a training, a validation "
                "and a test document each; give it more, or leave it out with CLASSIFY_CLASSES"
            )
        for split, part in (("train", train), ("val", val), ("test", test)):
            result.docs[split] += [(d.text, index) for d in part]
    train = result.counts()["train"]
    if max(train) > IMBALANCE_WARNING * min(train):
        result.notes.append(
            f"imbalanced classes: {max(train)} training documents in the largest, {min(train)} in the "
            "smallest; the prior (CLASSIFY_PRIOR) and the per-class figures matter here, the accuracy "
            "alone does not"
        )
    if dropped:
        result.notes.append(
            "left out before splitting: " + ", ".join(f"{n} {kind}" for kind, n in dropped.items())
        )
    return result
