"""The quality gate measured, and its thresholds chosen: per-image scores of every check through the
app's own batch path (decode at the working size -> the one input path -> the classifier's features),
a joint false-alarm budget on the validation split, and how the gate does on test images,
full-resolution uploads, images that are not dermoscopy and an external set."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from model.data.dataset import Record
from model.inference.batch_review import prepare
from model.inference.gate import MIN_SIDE


def gate_scores(analyzer, sources: Sequence, batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """For each source (bytes, a path or a Record): feature distance, colour distance, sharpness,
    grayscale and the smaller side as uploaded; NaN where an image could not be read."""
    out = {k: [] for k in ("ood", "colour", "sharpness", "grayscale", "min_side")}
    for start in range(0, len(sources), batch_size):
        chunk = [s.image_path.read_bytes() if isinstance(s, Record) else s for s in sources[start:start + batch_size]]
        prepared = [prepare(analyzer, s) for s in chunk]
        ok = [p for p in prepared if not isinstance(p, Exception)]
        feats = analyzer.engine(np.stack([p.x for p in ok]), ["features"])["features"] if ok else None
        dist = analyzer.gate.ood_distances(feats) if ok else None
        j = 0
        for p in prepared:
            if isinstance(p, Exception):
                for k in out:
                    out[k].append(np.nan)
                continue
            out["ood"].append(float(dist[j]) if dist is not None else np.nan)
            out["colour"].append(np.nan if p.pixels.colour_distance is None else p.pixels.colour_distance)
            out["sharpness"].append(np.nan if p.pixels.sharpness is None else p.pixels.sharpness)
            out["grayscale"].append(float(p.pixels.grayscale))
            out["min_side"].append(float(min(p.original)))
            j += 1
        if progress:
            progress(min(start + batch_size, len(sources)), len(sources))
    return {k: np.asarray(v, float) for k, v in out.items()}


def flagged(scores: dict[str, np.ndarray], thresholds: dict) -> np.ndarray:
    """Which images the gate flags under `thresholds` (ood_threshold, colour_threshold, sharpness_p01)."""
    f = (scores["grayscale"] > 0) | (scores["min_side"] < MIN_SIDE)
    if thresholds.get("ood_threshold") is not None:
        f |= scores["ood"] > thresholds["ood_threshold"]
    if thresholds.get("colour_threshold") is not None:
        f |= scores["colour"] > thresholds["colour_threshold"]
    if thresholds.get("sharpness_p01") is not None:
        f |= scores["sharpness"] < thresholds["sharpness_p01"]
    return f


def thresholds_at(scores: dict[str, np.ndarray], tail: float) -> dict:
    """Each check's threshold at the same tail share of the reference images."""
    return {"ood_threshold": float(np.nanpercentile(scores["ood"], 100 * (1 - tail))),
            "colour_threshold": float(np.nanpercentile(scores["colour"], 100 * (1 - tail))),
            "sharpness_p01": float(np.nanpercentile(scores["sharpness"], 100 * tail))}


def calibrate(scores: dict[str, np.ndarray], budget: float = 0.01) -> tuple[dict, float]:
    """The largest common tail share whose thresholds flag at most `budget` of the reference
    (validation) images with all checks together: (thresholds, tail share)."""
    lo, hi = 0.0, budget
    for _ in range(40):
        mid = (lo + hi) / 2
        if flagged(scores, thresholds_at(scores, mid)).mean() <= budget:
            lo = mid
        else:
            hi = mid
    return thresholds_at(scores, lo), lo
