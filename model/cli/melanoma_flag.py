"""(Re)choose a bundle's melanoma-flag threshold on its validation split.

    python -m model.cli.melanoma_flag BUNDLE --data DIR [--target 0.9]

The command line over model.aids.melanoma_flag; the work itself is done there.
"""
from __future__ import annotations

import sys
from typing import Sequence

from model.aids.melanoma_flag import FLAG_CLASS, TARGET_SENSITIVITY, choose_threshold
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.melanoma_flag", __doc__, "classifier bundle folder (with split.json)",
                       "the dataset the bundle was trained on")
    ap.add_argument("--target", type=float, default=TARGET_SENSITIVITY, help="sensitivity to reach on validation")
    args = ap.parse_args(argv)
    from model.nets.bundle import BundleError, load_bundle, update_meta
    from model.data.dataset import DatasetError
    from model.evaluation.evaluate import classifier_split_logits
    from model.data.dataset import records_for_split
    from model.nets.forward import calibrated_probs

    try:
        bundle = load_bundle(args.bundle)
        if FLAG_CLASS not in bundle.classes:
            raise BundleError(f"The bundle has no {FLAG_CLASS!r} class.")
        z, y, _ = classifier_split_logits(bundle, records_for_split(args.bundle, args.data, "val"),
                                          progress=sys.stderr.isatty())
        cfg = choose_threshold(calibrated_probs(bundle, z)[:, bundle.classes.index(FLAG_CLASS)],
                               y == bundle.classes.index(FLAG_CLASS), args.target)
    except (BundleError, DatasetError, ValueError) as e:
        return fail(e)
    update_meta(args.bundle, melanoma_flag=cfg)
    print(f"melanoma flag: P(mel) >= {cfg['threshold']:.4f} (validation sensitivity {cfg['val_sensitivity']:.3f}, "
          f"specificity {cfg['val_specificity']:.3f}); written to {args.bundle / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
