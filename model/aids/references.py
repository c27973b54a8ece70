"""Rebuild both aids of a classifier bundle in one pass over its split: the conformal thresholds
(validation split) and the similar-cases reference set (training split), each measured on the
test split for the model card. train.py calls `build_all` at the end of a run.

    python -m model.cli.references BUNDLE --data DIR [--dims 256]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.nets.bundle import Bundle, update_meta
from model.aids.conformal import calibrate_chosen, evaluate_sets
from model.aids.similar import DEFAULT_DIMS, DEFAULT_K, ReferenceIndex
from model.aids.similar_build import build_from_features, decode_split, embed_images
from model.aids.similar_eval import knn_report, split_features

TEST_COVERAGES = (80, 90, 95, 99)


def build_all(bundle: Bundle, data_dir: Path, train=None, val=None, dims: int = DEFAULT_DIMS,
              log=print) -> tuple[dict, dict]:
    """(conformal config, reference-set summary), both written to meta.json. `train`: optional
    (uint8 images at the input size, records) already in memory; `val`: optional (probs, labels)."""
    import torch

    if val is None:
        _, probs, labels = split_features(bundle, data_dir, "val")
        val = (probs, labels)
    conformal = calibrate_chosen(*val, bundle.classes)
    if train is None:
        feats, recs, imgs = [], [], []
        for records, images in decode_split(bundle, data_dir, "train"):
            feats.append(embed_images(bundle, images)[0])
            recs += records
            imgs.append(images)
        features, train = np.concatenate(feats), (torch.cat(imgs), recs)
    else:
        features = embed_images(bundle, train[0])[0]
    similar = build_from_features(bundle, features, train[0], train[1], data_dir, dims)
    log(f"reference set: {similar['n']} training images, {similar['dims']} dimensions, "
        f"{similar['bytes'] / 2**20:.1f} MB")
    f, p, y = split_features(bundle, data_dir, "test")
    conformal["test"] = {str(c): evaluate_sets(p, y, conformal, bundle.classes, c) for c in TEST_COVERAGES}
    similar["test"] = knn_report(ReferenceIndex.load(bundle.path, bundle.classes), f, p, y, DEFAULT_K)
    update_meta(bundle.path, conformal=conformal, similar=similar)
    t, c = similar["test"], conformal["test"]["90"]
    log(f"test: kNN vote balanced accuracy {t['knn_balanced_accuracy']:.3f} vs softmax "
        f"{t['softmax_balanced_accuracy']:.3f}; conformal 90%: coverage {c['coverage']:.3f}, mean set size "
        f"{c['mean_set_size']:.2f}")
    return conformal, similar
