"""Predict classes for image files, one JSON line per image.

    python -m model.predict BUNDLE IMAGE [IMAGE ...] [--tta]

A file that cannot be read prints a one-line error (to stderr) and makes the exit status 1;
the other files are still predicted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .bundle import BundleError, load_bundle
from .case_aids import aids_json
from .conformal import DEFAULT_COVERAGE
from .pipeline import Analyzer


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.predict", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle folder")
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--tta", action="store_true", help="average over flipped views")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--coverage", type=int, default=DEFAULT_COVERAGE, help="prediction-set coverage, percent (80-99)")
    args = ap.parse_args(argv)
    from .training import pick_device

    try:
        analyzer = Analyzer(load_bundle(args.bundle, pick_device(args.device)))
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if analyzer.aids.index_error:
        print(f"warning: {analyzer.aids.index_error}", file=sys.stderr)
    status = 0
    items = []
    for path in args.images:
        try:
            items.append((str(path), path.read_bytes()))
        except OSError as e:
            print(f"{path}: error: cannot read file ({e.strerror})", file=sys.stderr)
            status = 1
    for pred in analyzer.classify_many(items, tta=args.tta):
        if pred.error:
            print(f"{pred.name}: error: {pred.error}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"image": pred.name, "top_class": pred.top_class,
                          "top_probability": round(pred.top_probability, 5),
                          "malignant_probability": round(pred.malignant_probability, 5),
                          "melanoma_flag": pred.melanoma_flag,
                          "probabilities": {c: round(float(p), 5) for c, p in zip(analyzer.classes, pred.probabilities)},
                          "flags": pred.flags, **aids_json(pred, args.coverage)}))
    return status


if __name__ == "__main__":
    sys.exit(main())
