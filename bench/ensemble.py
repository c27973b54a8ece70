"""Would a small ensemble beat the best single classifier? Averages the members' calibrated
probabilities (each with its own temperature) on a split and prints one recipe-table-style line
per member and for the average.

    python -m bench.ensemble BUNDLE BUNDLE [BUNDLE] --data ../shared/data/ham10000 [--split val]

Choose on validation (the default); the issue's rule: an ensemble row counts only if it beats
the best single member by 0.02 balanced accuracy or more there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

GAIN_NEEDED = 0.02


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ensemble", description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val", choices=("val", "test"))
    args = ap.parse_args(argv)
    from model.nets import tv_compat  # noqa: F401
    from model.nets.bundle import load_bundle
    from model.evaluation.evaluate import classifier_split_logits
    from model.data.dataset import records_for_split
    from model.nets.forward import calibrated_probs
    from model.metrics import classification_report, expected_calibration_error

    if len(args.bundles) < 2:
        ap.error("give at least two bundles")
    records = records_for_split(args.bundles[0], args.data, args.split)
    probs, labels, classes = [], None, None
    print(f"| members ({args.split}) | balanced accuracy | macro AUC | melanoma sensitivity | ECE |")
    print("|---|---:|---:|---:|---:|")
    for path in args.bundles:
        bundle = load_bundle(path)
        if classes is not None and bundle.classes != classes:
            print(f"error: {path} has classes {bundle.classes}, not {classes}", file=sys.stderr)
            return 2
        classes = bundle.classes
        z, y, _ = classifier_split_logits(bundle, records, progress=sys.stderr.isatty())
        labels = y if labels is None else labels
        p = calibrated_probs(bundle, z)
        probs.append(p)
        _line(path.name, classification_report(y, p, classes), expected_calibration_error(p, y))
    mean = np.mean(probs, axis=0)
    rep = classification_report(labels, mean, classes)
    _line(" + ".join(p.name for p in args.bundles), rep, expected_calibration_error(mean, labels))
    best = max(classification_report(labels, p, classes)["balanced_accuracy"] for p in probs)
    gain = rep["balanced_accuracy"] - best
    print(f"\nensemble - best member: {gain:+.3f} balanced accuracy "
          f"({'meets' if gain >= GAIN_NEEDED else 'below'} the {GAIN_NEEDED} needed for an ensemble row)")
    return 0


def _line(name: str, rep: dict, ece: float) -> None:
    print(f"| {name} | {rep['balanced_accuracy']:.3f} | {rep['macro_auc']:.3f} | "
          f"{rep['melanoma_sensitivity']:.3f} | {ece:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
