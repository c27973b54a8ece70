"""Calibration diagnostics of a classifier bundle on one split (validation by default): ECE with
the bundle's temperature, ECE after re-weighting the outputs by the training split's class
frequencies (undoing balanced sampling's prior shift, temperature re-fitted), the balanced
accuracy each gives, and how many images get exploding logits.

    python -m bench.calibration_check assets/models/classifier --data ../shared/data/ham10000
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

EXPLODING_LOGIT = 50.0


def main(argv=None) -> int:
    from model.nets.bundle import load_bundle
    from model.data.dataset import load_dataset, read_split, select
    from model.evaluation.evaluate import classifier_split_logits
    from model.metrics import classification_report, expected_calibration_error, softmax
    from model.training.loop import fit_temperature

    ap = argparse.ArgumentParser(prog="python -m bench.calibration_check", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val", choices=("val", "test"))
    args = ap.parse_args(argv)

    bundle = load_bundle(args.bundle, "cpu")
    ds = load_dataset(args.data)
    splits, _ = read_split(args.bundle / "split.json")
    z, y, _ = classifier_split_logits(bundle, select(ds.records, splits[args.split]), progress=False)
    train_labels = [r.label for r in select(ds.records, splits["train"])]
    prior = np.array([train_labels.count(c) for c in bundle.classes], np.float64) / len(train_labels)

    plain = classification_report(y, softmax(z, bundle.temperature), bundle.classes)
    shifted = z + np.log(prior)
    t_shifted = fit_temperature(shifted, y)
    adjusted = classification_report(y, softmax(shifted, t_shifted), bundle.classes)
    peak = np.abs(z).max(1)
    out = {"split": args.split, "n": int(len(y)), "temperature": bundle.temperature,
           "ece_raw": round(expected_calibration_error(softmax(z), y), 4),
           "ece_with_temperature": round(plain["ece"], 4),
           "balanced_accuracy": round(plain["balanced_accuracy"], 4),
           "prior_adjusted": {"temperature": round(t_shifted, 3), "ece": round(adjusted["ece"], 4),
                              "balanced_accuracy": round(adjusted["balanced_accuracy"], 4)},
           f"images_with_abs_logit_over_{EXPLODING_LOGIT:g}": int((peak > EXPLODING_LOGIT).sum()),
           "max_abs_logit": round(float(peak.max()), 1), "median_max_abs_logit": round(float(np.median(peak)), 2)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
