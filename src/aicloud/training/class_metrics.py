"""Classification metrics of fine-tuning jobs in numpy: accuracy and macro-F1 (no scikit-learn import)."""

from __future__ import annotations

import numpy as np


def macro_f1(pred: np.ndarray, y: np.ndarray, classes: int) -> float:
    """The unweighted mean over ``classes`` of each class's F1 (``2·TP / (2·TP + FP + FN)``).

    A class with no true and no predicted rows has no F1 and is left out of the mean (as
    scikit-learn's ``f1_score(average="macro", labels=<present>)``); nan when no class is.
    """
    pred, y = np.asarray(pred).reshape(-1), np.asarray(y).reshape(-1)
    scores = []
    for c in range(classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def classification_metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``eval_loss`` (cross-entropy), ``eval_accuracy`` and ``eval_macro_f1`` of logits against labels."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) == 0:
        return {"eval_loss": float("nan"), "eval_accuracy": float("nan"), "eval_macro_f1": float("nan")}
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    pred = logits.argmax(axis=1)
    return {
        "eval_loss": float(-log_probs[np.arange(len(y)), y].mean()),
        "eval_accuracy": float((pred == y).mean()),
        "eval_macro_f1": macro_f1(pred, y, logits.shape[1]),
    }
