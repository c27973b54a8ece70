"""Measure the share of Grad-CAM heat inside the reference lesion masks over a split.

    python -m model.cli.heat_in_lesion BUNDLE --data DIR [--split test] [--previous OLD_BUNDLE]

The command line over model.evaluation.heat_in_lesion; the work itself is done there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from model.data.dataset import DatasetError
from model.evaluation.heat_in_lesion import heat_in_lesion
from model.nets.bundle import BundleError, load_bundle, update_meta
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.heat_in_lesion", __doc__, "classifier bundle (its split.json chooses the images)",
                       "dataset folder with lesion masks")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--previous", type=Path, help="an earlier classifier bundle to measure on the same images")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    from model.data.dataset import records_for_split

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        records = records_for_split(args.bundle, args.data, args.split)
        out = {}
        for key, path in (("shipped", args.bundle), ("previous", args.previous)):
            if path is None:
                continue
            bundle = load_bundle(path)
            fig = heat_in_lesion(bundle, records, progress=sys.stderr.isatty())
            out[key] = {**fig, "arch": bundle.meta["arch"], "created": bundle.meta.get("created"),
                        "split": args.split, "split_hash": bundle.meta.get("split", {}).get("hash")}
            print(f"{key} ({bundle.meta['arch']}): mean share of Grad-CAM heat in the lesion {fig['mean_share']:.3f}, "
                  f"under 50% on {fig['share_of_images_under_50pct']:.1%} of {fig['n']} images")
    except (BundleError, DatasetError) as e:
        return fail(e)
    current = json.loads((args.bundle / "meta.json").read_text()).get("interpretability", {})
    update_meta(args.bundle, interpretability={**current, "gradcam_in_lesion": out})  # keeps other figures
    return 0


if __name__ == "__main__":
    sys.exit(main())
