"""(Re)choose a bundle's melanoma-flag threshold on its validation split.

    python -m model.cli.melanoma_flag BUNDLE --data DIR [--target 0.9]
    python -m model.cli.melanoma_flag BUNDLE --data DIR --external ../shared/data/derm7pt --min-specificity 0.6

With --external (a set with parts, such as Derm7pt), the threshold chosen on validation is raised, if
need be, until at least --min-specificity of the other lesions in the set's `select` part stay
unflagged (model.aids.melanoma_flag.raise_for_other_devices); its `report` part is left for reporting.

The command line over model.aids.melanoma_flag; the work itself is done there.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from model.aids.melanoma_flag import (FLAG_CLASS, TARGET_SENSITIVITY, choose_threshold, raise_for_other_devices,
                                      restate_validation)
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.melanoma_flag", __doc__, "classifier bundle folder (with split.json)",
                       "the dataset the bundle was trained on")
    ap.add_argument("--target", type=float, default=TARGET_SENSITIVITY, help="sensitivity to reach on validation")
    ap.add_argument("--external", type=Path, default=None,
                    help="another clinic's labelled set with parts (Derm7pt layout); its select part is used")
    ap.add_argument("--min-specificity", type=float, default=0.60,
                    help="with --external: specificity to keep on its select part (default 0.60)")
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
        mel = bundle.classes.index(FLAG_CLASS)
        p_val, mel_val = calibrated_probs(bundle, z)[:, mel], y == mel
        cfg = choose_threshold(p_val, mel_val, args.target)
        if args.external is not None:
            cfg = restate_validation(external(bundle, args, cfg), p_val, mel_val)
    except (BundleError, DatasetError, ValueError) as e:
        return fail(e)
    cfg["command"] = "python -m model.cli.melanoma_flag " + " ".join(sys.argv[1:] if argv is None else argv)
    update_meta(args.bundle, melanoma_flag=cfg)
    print(f"melanoma flag: P(mel) >= {cfg['threshold']:.4f} (validation sensitivity {cfg['val_sensitivity']:.3f}, "
          f"specificity {cfg['val_specificity']:.3f}); written to {args.bundle / 'meta.json'}")
    if "external" in cfg:
        ext = cfg["external"]
        print(f"  on {ext['where']}: sensitivity {ext['sensitivity']:.3f}, specificity {ext['specificity']:.3f} "
              f"({ext['melanomas']} melanomas, {ext['others']} other lesions); {cfg['chosen_on']}")
    return 0


def external(bundle, args, cfg: dict) -> dict:
    """cfg raised for the --external set's select part, read through the app's one input path."""
    import numpy as np

    from model.data.dataset import load_dataset, records_for_split
    from model.evaluation.external import predict_records
    from model.inference.pipeline import Analyzer

    records = [r for r in records_for_split(args.bundle, load_dataset(args.external), "select") if r.label]
    preds = predict_records(Analyzer(bundle), records)
    p_mel = np.array([p.probabilities[bundle.classes.index(FLAG_CLASS)] for p in preds])
    is_mel = np.array([r.label == FLAG_CLASS for r in records])
    return raise_for_other_devices(cfg, p_mel, is_mel, args.min_specificity,
                                   f"{Path(args.external).resolve().name} select ({len(records)} images)")


if __name__ == "__main__":
    sys.exit(main())
