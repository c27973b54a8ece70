"""A classifier on images from another clinic and dermatoscope (an external test set such as Derm7pt),
through the app's own batch path (`Analyzer.classify_many`): the one input path, the quality gate,
the melanoma flag and the prediction sets, exactly as a clinician's upload would meet them.

Reported: balanced accuracy over the classes the set has, macro and melanoma AUC, the melanoma flag's
sensitivity and specificity, prediction-set coverage and size, and the gate: how many images it
flags, and how often the flagged and the passed images are wrong (a gate earns its place only when
flagged images are wrong more often)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from model.data.dataset import Record
from model.metrics import classification_report, roc_auc
from model.inference.results import gated



def predict_records(analyzer, records: Sequence[Record], batch_size: int = 32,
                    progress: Callable[[int, int], None] | None = None) -> list:
    """BatchPredictions for labelled records, read a batch at a time."""
    out = []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        out += analyzer.classify_many([(r.image_id, r.image_path.read_bytes()) for r in chunk])
        if progress:
            progress(min(i + batch_size, len(records)), len(records))
    return out


def rate(mask: np.ndarray) -> float | None:
    """The share of True in a boolean array; None for an empty one."""
    return float(np.mean(mask)) if len(mask) else None


def gate_report(wrong: np.ndarray, flagged: np.ndarray) -> dict:
    """How many images the gate flags, and the error rate of the flagged against the passed ones."""
    return {"flagged": int(flagged.sum()), "flag_rate": rate(flagged),
            "error_rate_flagged": rate(wrong[flagged]), "error_rate_passed": rate(wrong[~flagged])}


def set_report(sets: Sequence[Sequence[str] | None], labels: Sequence[str], classes: Sequence[str]) -> dict:
    """Coverage (overall and per class), mean size, single-class and empty shares of prediction sets."""
    ok = [(s, y) for s, y in zip(sets, labels) if s is not None]
    if not ok:
        return {"n": 0}
    hit = np.array([y in s for s, y in ok])
    size = np.array([len(s) for s, _ in ok])
    per_class = {c: rate(np.array([y in s for s, y in ok if y == c])) for c in classes
                 if any(y == c for _, y in ok)}
    return {"n": len(ok), "coverage": float(hit.mean()), "mean_set_size": float(size.mean()),
            "singleton_share": float((size == 1).mean()), "empty": int((size == 0).sum()), "per_class": per_class}


def external_report(analyzer, records: Sequence[Record], coverage: int = 90, batch_size: int = 32,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Every figure of the module docstring for labelled records of an external set."""
    classes = analyzer.classes
    records = [r for r in records if r.label in classes]
    preds = predict_records(analyzer, records, batch_size, progress)
    good = [(r, p) for r, p in zip(records, preds) if p.error is None]
    y = np.array([classes.index(r.label) for r, _ in good], int)
    probs = np.stack([p.probabilities for _, p in good]) if good else np.zeros((0, len(classes)))
    rep = classification_report(y, probs, classes)
    present = sorted({int(v) for v in y})
    out = {"n": len(good), "skipped": [(r.image_id, p.error) for r, p in zip(records, preds) if p.error],
           "classes_present": [classes[i] for i in present], "balanced_accuracy": rep["balanced_accuracy"],
           "accuracy": rep["accuracy"], "macro_auc_present": float(np.nanmean([
               roc_auc(y == i, probs[:, i]) for i in present])) if len(present) > 1 else None,
           "per_class": rep["per_class"], "confusion_matrix": rep["confusion_matrix"]}
    if "mel" in classes and good:
        m = classes.index("mel")
        out["melanoma_auc"] = roc_auc(y == m, probs[:, m])
        out["melanoma_top_class_sensitivity"] = rep.get("melanoma_sensitivity")
        flag = np.array([bool(p.melanoma_flag) for _, p in good])
        out["melanoma_flag_sensitivity"] = rate(flag[y == m])
        out["melanoma_flag_specificity"] = rate(~flag[y != m])
    wrong = probs.argmax(1) != y if good else np.zeros(0, bool)
    out["gate"] = gate_report(wrong, np.array([gated(p.flags) for _, p in good], bool))
    out["sets"] = {"coverage_level": coverage,
                   **set_report([p.prediction_sets.get(coverage) if p.prediction_sets else None for _, p in good],
                                [r.label for r, _ in good], classes)}
    return out
