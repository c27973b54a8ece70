"""Does the classifier look at the lesion? The share of Grad-CAM heat inside the reference lesion
mask, over a split's images, for the shipped classifier (and, to compare, a previous one).

    python -m model.evaluation.heat_in_lesion BUNDLE --data DIR [--split test] [--previous OLD_BUNDLE]

Grad-CAM for each image's top class at the layer the app uses by default (the last stage),
scaled and resized to the image as the app shows it, against the dataset's own mask (not the
segmenter's). Written to BUNDLE/meta.json as `interpretability`; the model card shows it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.nets.bundle import Bundle, BundleError, load_bundle, update_meta
from model.nets.classifier import feature_layers
from model.data.dataset import DatasetError, Record
from model.explain.cams import cam_at, forward_explain
from model.inference.measurements import attention_on_lesion
from model.data.preprocess import ImageError, decode_image, normalize, read_mask, to_uint8_batch

LOW_SHARE = 0.5


def heat_in_lesion(bundle: Bundle, records: Sequence[Record], method: str = "gradcam",
                   progress: bool = True) -> dict:
    """Per-image share of `method`'s heat inside the reference mask, and its summary."""
    shares, skipped = [], 0
    layer = len(feature_layers(bundle.model)) - 1
    for r in tqdm(list(records), desc="heat in lesion", disable=not progress, leave=False):
        if r.mask_path is None:
            skipped += 1
            continue
        try:
            rgb, mask = decode_image(r.image_path), read_mask(r.mask_path)
        except (ImageError, OSError, ValueError):
            skipped += 1
            continue
        x = normalize(to_uint8_batch([rgb], bundle.input_size, bundle.domain), bundle.mean, bundle.std)
        fwd = forward_explain(bundle.model, x, None, layer, (method,))
        cam = cam_at(fwd.cams[method], mask.shape)
        share = attention_on_lesion(cam, mask)
        if share is None:
            skipped += 1
            continue
        shares.append(share)
    if not shares:
        raise DatasetError("No image with a usable mask and heatmap to measure.")
    s = np.asarray(shares)
    return {"method": method, "layer": feature_layers(bundle.model)[layer], "cam_class": "top class",
            "n": int(len(s)), "skipped": skipped, "mean_share": round(float(s.mean()), 4),
            "median_share": round(float(np.median(s)), 4),
            "share_of_images_under_50pct": round(float((s < LOW_SHARE).mean()), 4),
            "mask": "HAM10000 reference lesion masks"}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.evaluation.heat_in_lesion", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle (its split.json chooses the images)")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder with lesion masks")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--previous", type=Path, help="an earlier classifier bundle to measure on the same images")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    from model.evaluation.evaluate import records_for_split

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
        print(f"error: {e}", file=sys.stderr)
        return 2
    current = json.loads((args.bundle / "meta.json").read_text()).get("interpretability", {})
    update_meta(args.bundle, interpretability={**current, "gradcam_in_lesion": out})  # keeps other figures
    return 0


if __name__ == "__main__":
    sys.exit(main())
