"""How well the reference set's kNN vote does on the test split, beside the softmax (model card).

Measured by `python -m model.cli.similar build` (and train.py) and stored in meta.json `similar.test`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.metrics import classification_report


def knn_report(index, features: np.ndarray, probs: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """kNN-vote and softmax balanced accuracy and macro AUC, and precision at k per class
    (share of a query's k neighbours with its true class, averaged over the class's queries)."""
    classes = index.classes
    idx, sims = index.search(features, k)
    shares = np.zeros((len(labels), len(classes)))
    from model.aids.similar import vote_shares

    shares = vote_shares(index.labels[idx], sims, len(classes))
    knn, soft = classification_report(labels, shares, classes), classification_report(labels, probs, classes)
    hits = (index.labels[idx] == labels[:, None]).mean(1)
    return {"n": int(len(labels)), "k": k, "split": "test",
            "knn_balanced_accuracy": knn["balanced_accuracy"], "knn_macro_auc": knn["macro_auc"],
            "knn_accuracy": knn["accuracy"],
            "softmax_balanced_accuracy": soft["balanced_accuracy"], "softmax_macro_auc": soft["macro_auc"],
            "softmax_accuracy": soft["accuracy"],
            "agreement": float((shares.argmax(1) == probs.argmax(1)).mean()),
            "precision_at_k": {c: float(hits[labels == i].mean()) if (labels == i).any() else None
                               for i, c in enumerate(classes)},
            "mean_precision_at_k": float(hits.mean())}


def split_features(bundle, data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre-logit features, calibrated probabilities, labels) of one split, one forward pass."""
    from model.nets.forward import calibrated_probs
    from model.aids.similar_build import decode_split, embed_images

    feats, logits, labels = [], [], []
    for records, images in decode_split(bundle, data_dir, split):
        f, z = embed_images(bundle, images)
        feats.append(f)
        logits.append(z)
        labels += [bundle.classes.index(r.label) for r in records]
    return np.concatenate(feats), calibrated_probs(bundle, np.concatenate(logits)), np.asarray(labels)


def evaluate_knn(bundle, data_dir: Path, k: int | None = None) -> dict:
    from model.aids.similar import DEFAULT_K, ReferenceIndex

    index = ReferenceIndex.load(bundle.path, bundle.classes)
    f, p, y = split_features(bundle, Path(data_dir), "test")
    return knn_report(index, f, p, y, k or DEFAULT_K)
