"""The discriminative baseline on the classifier's own split: tf-idf weighted word 1-2 grams and a
logistic regression (scikit-learn, the optional `classify` extra: pip install -e '.[classify]').

The regularisation strength is chosen on the validation split from a small grid, the model is
fitted on the training split and tested on the test split, the same documents the generative
classifier is tested on.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np

from lib.classify.corpus import class_names, documents
from lib.classify.metrics import confusion, per_class
from lib.io import atomic_write_json

C_GRID = (0.25, 1.0, 4.0, 16.0)


def tfidf_logistic_regression(
    train: list[tuple[str, int]], val: list[tuple[str, int]], test: list[tuple[str, int]], num_classes: int
) -> dict:
    """Accuracy, macro-F1, confusion and predictions of the baseline; {"skipped": why} without sklearn."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return {"skipped": "scikit-learn is not installed: pip install -e '.[classify]'"}
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform([t for t, _ in train])
    y_train = np.array([c for _, c in train])

    def fit(c: float):
        return LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)

    x_val, y_val = vectorizer.transform([t for t, _ in val]), np.array([c for _, c in val])
    scores = {c: (fit(c).predict(x_val) == y_val).mean() for c in C_GRID}
    best = max(C_GRID, key=lambda c: (scores[c], -abs(np.log(c))))  # ties: the C nearest 1
    model = fit(best)
    y_test = np.array([c for _, c in test])
    predicted = model.predict(vectorizer.transform([t for t, _ in test]))
    matrix = confusion(y_test, predicted, num_classes)
    return {
        "method": "tf-idf word 1-2 grams (min_df 2, sublinear tf) + logistic regression",
        "C": best,
        "val_accuracy": {str(c): float(a) for c, a in scores.items()},
        "accuracy": float((predicted == y_test).mean()),
        "macro_f1": float(per_class(matrix)["f1"].mean()),
        "confusion": matrix.tolist(),
        "seconds": round(time.perf_counter() - start, 2),
        "predicted": predicted,
    }


def corpus_baseline(path: Path, data_dir: str | Path, corpus: dict, max_test_docs: int) -> dict:
    """The baseline on the prepared corpus's own split, kept in `path` (baseline.json) for its corpus."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("corpus") == corpus["corpus"] and saved.get("max_test_docs") == max_test_docs:
            return saved
    names = class_names(corpus)
    split = {k: [(t, names.index(c)) for t, c in v] for k, v in documents(data_dir).items()}
    test = split["test"][:max_test_docs] if max_test_docs else split["test"]
    logging.getLogger("classify").info(
        "baseline: tf-idf + logistic regression on %d training documents", len(split["train"])
    )
    result = tfidf_logistic_regression(split["train"], split["val"], test, len(names))
    result.pop("predicted", None)
    result.update(corpus=corpus["corpus"], max_test_docs=max_test_docs)
    atomic_write_json(path, result)
    return result
