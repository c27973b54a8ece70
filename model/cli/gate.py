"""Choose a classifier's quality-gate thresholds on its validation split and measure the gate.

    python -m model.cli.gate BUNDLE --data DIR [--budget 0.01] [--fullres DIR] [--not-dermoscopy DIR]
                             [--external DIR] [--dry-run]

Every check (feature distance, colour distance, sharpness) gets its threshold at one common tail
share of the validation images, the largest whose checks together flag at most --budget of them,
all through the one input path. Then: the share of test images flagged (false alarms), the
full-resolution uploads flagged, the share of not-dermoscopy images caught, and on an external set
(Derm7pt's `report` part) the error rate of flagged against passed images. Written to meta.json
`quality` (thresholds) and `quality.gate` (figures) unless --dry-run.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from model.cli.common import bundle_parser, fail
from model.data.dataset import DatasetError, image_files, load_dataset, records_for_split
from model.evaluation.external import external_report, rate
from model.evaluation.gate_check import calibrate, flagged, gate_scores
from model.inference.pipeline import Analyzer
from model.nets.bundle import BundleError, load_bundle, update_meta


def measure(analyzer, args, thresholds: dict, ds) -> dict:
    """The gate's figures under `thresholds` on every set the command was given."""
    def share(sources) -> tuple[int, int, float | None]:
        f = flagged(gate_scores(analyzer, sources), thresholds)
        return int(f.sum()), len(f), rate(f)

    out = {}
    n, total, r = share(records_for_split(args.bundle, ds, "test"))
    out["test"] = {"flagged": n, "n": total, "rate": r}
    if args.fullres:
        n, total, r = share([p.read_bytes() for p in image_files(args.fullres / "images")])
        out["fullres"] = {"flagged": n, "n": total, "rate": r, "data": str(args.fullres)}
    if args.not_dermoscopy:
        n, total, r = share([p.read_bytes() for p in image_files(args.not_dermoscopy)])
        out["not_dermoscopy"] = {"flagged": n, "n": total, "rate": r, "data": str(args.not_dermoscopy)}
    if args.external:
        rep = external_report(analyzer, records_for_split(args.bundle, args.external, "report"))
        out["external"] = {**rep["gate"], "n": rep["n"], "data": str(args.external), "part": "report"}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.gate", __doc__)
    ap.add_argument("--budget", type=float, default=0.01, help="share of validation images the gate may flag")
    ap.add_argument("--fullres", type=Path, help="full-resolution uploads (a folder with images/)")
    ap.add_argument("--not-dermoscopy", type=Path, help="a folder of images that are not dermoscopy")
    ap.add_argument("--external", type=Path, help="an external set with a `part` column (Derm7pt)")
    ap.add_argument("--dry-run", action="store_true", help="print; do not write meta.json")
    args = ap.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        ds = load_dataset(args.data)
        val = gate_scores(Analyzer(bundle), records_for_split(args.bundle, ds, "val"))
        thresholds, tail = calibrate(val, args.budget)
        quality = {**bundle.meta.get("quality", {}), **thresholds}
        analyzer = Analyzer(dataclasses.replace(bundle, meta={**bundle.meta, "quality": quality}))
        figures = measure(analyzer, args, thresholds, ds)
    except (BundleError, DatasetError, OSError) as e:
        return fail(e)
    quality["gate"] = {"budget": args.budget, "tail_share": tail, "val_flag_rate": rate(flagged(val, thresholds)),
                       "chosen_on": "validation split, through the one input path", **figures,
                       "command": "python -m model.cli.gate " + " ".join(argv if argv is not None else sys.argv[1:])}
    quality["ood_reference"] = f"{100 * (1 - tail):.2f}th percentile of validation feature distance (joint budget)"
    quality["colour_reference"] = f"{100 * (1 - tail):.2f}th percentile of validation colour distance (joint budget)"
    print(f"thresholds at a {tail:.4f} tail share: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()))
    for name, f in figures.items():
        extra = (f"; error rate flagged {f['error_rate_flagged']} vs passed {f['error_rate_passed']}"
                 if name == "external" else "")
        print(f"{name}: {f['flagged']} of {f['n']} flagged{extra}")
    if not args.dry_run:
        update_meta(args.bundle, quality=quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
