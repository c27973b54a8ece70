"""Does the classifier look at the lesion? The share of Grad-CAM heat inside the reference lesion
mask, over a split's images, for the shipped classifier (and, to compare, a previous one).

    python -m model.cli.heat_in_lesion BUNDLE --data DIR [--split test] [--previous OLD_BUNDLE]

Grad-CAM for each image's top class at the layer the app uses by default (the last stage),
scaled and resized to the image as the app shows it, against the dataset's own mask (not the
segmenter's). Written to BUNDLE/meta.json as `interpretability`; the model card shows it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm import tqdm

from model.nets.bundle import Bundle
from model.nets.classifier import feature_layers
from model.data.dataset import DatasetError, Record
from model.explain.cams import cam_at, forward_explain
from model.explain.attention import attention_on_lesion
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
