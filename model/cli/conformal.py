"""Calibrate conformal prediction sets on the validation split and measure them on test.

    python -m model.cli.conformal BUNDLE --data DIR [--score raps|aps]

The command line over model.aids.conformal; the work itself is done there.
"""
from __future__ import annotations

import sys
from typing import Sequence

from model.aids.conformal import SCORES, calibrate_and_measure
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.conformal", __doc__, "classifier bundle folder (with split.json)",
                       "the dataset the bundle was trained on")
    ap.add_argument("--score", choices=SCORES, help="conformity score (default: chosen on the validation split)")
    ap.add_argument("--no-top", action="store_true", help="do not add the top class to every set (with --score)")
    ap.add_argument("--no-test", action="store_true", help="calibrate only; do not measure on the test split")
    args = ap.parse_args(argv)
    from model.nets.bundle import BundleError, load_bundle
    from model.data.dataset import DatasetError
    from model.evaluation.evaluate import classifier_split_logits
    from model.data.dataset import records_for_split
    from model.nets.forward import calibrated_probs

    try:
        bundle = load_bundle(args.bundle)
        parts = {}
        for split in ("val",) + (() if args.no_test else ("test",)):
            z, y, _ = classifier_split_logits(bundle, records_for_split(args.bundle, args.data, split),
                                              progress=sys.stderr.isatty())
            parts[split] = (calibrated_probs(bundle, z), y)
        cfg = calibrate_and_measure(args.bundle, parts["val"], parts.get("test"), bundle.classes, args.score,
                                    always_top=not args.no_top)
    except (BundleError, DatasetError, ValueError) as e:
        return fail(e)
    print(f"conformal ({cfg['method']}, {cfg['score']}) calibrated on {sum(cfg['n_per_class'].values())} validation "
          f"images; written to {args.bundle / 'meta.json'}")
    for cov, r in cfg.get("test", {}).items():
        print(f"test at {cov}%: coverage {r['coverage']:.3f}, mean set size {r['mean_set_size']:.2f}, single "
              f"{r['singleton_share']:.3f}; per class " + ", ".join(
                  f"{c} {v['coverage']:.2f}" for c, v in r["per_class"].items() if v["coverage"] is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
