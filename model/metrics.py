"""Classification, calibration and segmentation metrics in plain numpy (no torch)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); nan if one class is absent."""
    y = np.asarray(y_binary, bool)
    s = np.asarray(scores, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0,0) to (1,1)."""
    y = np.asarray(y_binary, bool)
    s = np.asarray(scores, float)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0, tps / max(y.sum(), 1)]
    fpr = np.r_[0, fps / max((~y).sum(), 1)]
    return fpr, tpr


def calibration_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15):
    """Top-label reliability bins: (bin centres, accuracy, confidence, counts)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    acc = np.bincount(idx, weights=correct, minlength=n_bins) / np.maximum(counts, 1)
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / np.maximum(counts, 1)
    return (edges[:-1] + edges[1:]) / 2, acc, mean_conf, counts


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over bins of |accuracy - confidence| weighted by the bin's share."""
    _, acc, conf, counts = calibration_bins(probs, y_true, n_bins)
    return float(np.sum(counts / max(counts.sum(), 1) * np.abs(acc - conf)))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, float) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_report(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Everything the evaluation reports for a classifier, from true labels and probabilities."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, float)
    k = len(classes)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, k)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    aucs = np.array([roc_auc(y == i, probs[:, i]) for i in range(k)])
    present = support > 0
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "auc": None if np.isnan(aucs[i]) else float(aucs[i]), "support": int(support[i])}
                 for i, c in enumerate(classes)}
    report = {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "macro_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else None,
        "ece": expected_calibration_error(probs, y),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
    if "mel" in classes:
        m = list(classes).index("mel")
        is_mel, called_mel = y == m, pred == m
        report["melanoma_sensitivity"] = float(called_mel[is_mel].mean()) if is_mel.any() else None
        report["melanoma_specificity"] = float((~called_mel)[~is_mel].mean()) if (~is_mel).any() else None
    return report


JACCARD_THRESHOLD = 0.65  # ISIC 2018 Task 1: a per-image Jaccard under this scores 0


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 1.0  # the ISIC scorer's convention: an undefined ratio scores 1


def mask_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How a predicted lesion mask agrees with the truth (boolean arrays of one shape): dice,
    jaccard (IoU), ISIC 2018's thresholded jaccard, pixel accuracy, sensitivity, specificity.
    An undefined ratio (two empty masks, say) scores 1, as the ISIC scorer does."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    tp, tn = float((t & p).sum()), float((~t & ~p).sum())
    fp, fn = float((~t & p).sum()), float((t & ~p).sum())
    jac = _ratio(tp, tp + fp + fn)
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn), "jaccard": jac,
            "threshold_jaccard": jac if jac >= JACCARD_THRESHOLD else 0.0,
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp)}


def segmentation_report(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> dict:
    """Mean Dice, mean IoU and ISIC 2018's thresholded Jaccard (per-image IoU < 0.65 counts 0)."""
    scores = [mask_scores(p, t) for p, t in zip(preds, trues)]
    dice = np.array([s["dice"] for s in scores], float)
    iou = np.array([s["jaccard"] for s in scores], float)
    return {
        "n": int(len(dice)),
        "mean_dice": float(dice.mean()) if len(dice) else float("nan"),
        "mean_iou": float(iou.mean()) if len(iou) else float("nan"),
        "thresholded_jaccard": float(np.where(iou < JACCARD_THRESHOLD, 0.0, iou).mean()) if len(iou) else float("nan"),
        "per_image_dice": [round(float(d), 4) for d in dice],
    }
