"""The classifier's figures from its saved scores (plain numpy): decisions, accuracy, macro-F1,
the confusion matrix, each class's probability, and each class model's perplexity on every class.

Everything here is recomputed from `scores.npz` (the log-likelihoods, the prediction counts, the
labels and the priors), so a report can always be checked against what was scored.
"""

import numpy as np


def decision_scores(
    loglik: np.ndarray, counts: np.ndarray, prior: np.ndarray, *, normalised: bool, use_prior: bool
) -> np.ndarray:
    """(documents, classes): the summed log-likelihood (or its mean per prediction) plus the log prior."""
    scores = loglik / counts[:, None] if normalised else loglik.copy()
    if use_prior:
        scores = scores + np.log(prior)[None, :]
    return scores


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax over the classes of each document's scores (a probability per class)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class)."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class from a confusion matrix (0 where undefined)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def perplexity_matrix(
    loglik: np.ndarray, counts: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """(model, true class): each class model's perplexity on the test documents of each class."""
    out = np.full((loglik.shape[1], num_classes), np.nan)
    for k in range(num_classes):
        mine = labels == k
        if mine.any():
            out[:, k] = np.exp(-loglik[mine].sum(axis=0) / counts[mine].sum())
    return out


def summary(
    loglik: np.ndarray,
    counts: np.ndarray,
    labels: np.ndarray,
    prior: np.ndarray,
    classes: list[str],
    *,
    normalised: bool,
    use_prior: bool,
) -> dict:
    """Every figure of a classifier's report, as plain data."""
    scores = decision_scores(loglik, counts, prior, normalised=normalised, use_prior=use_prior)
    predicted = scores.argmax(axis=1)
    matrix = confusion(labels, predicted, len(classes))
    pc = per_class(matrix)
    return {
        "classes": classes,
        "documents": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(pc["f1"].mean()),
        "per_class": {
            c: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in pc.items()}
            for i, c in enumerate(classes)
        },
        "confusion": matrix.tolist(),
        "perplexity": perplexity_matrix(loglik, counts, labels, len(classes)).tolist(),
        "prior": prior.tolist(),
        "majority_accuracy": float(np.bincount(labels, minlength=len(classes)).max() / len(labels)),
        "predicted": predicted,
        "probabilities": probabilities(scores),
    }
