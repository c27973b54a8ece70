"""Batch review (`Analyzer.classify_many`): many uploads -> BatchPredictions, a batch at a time.

Each item is made ready on the engine's lanes (decoded at the working size, the classifier's
normalised input, the pixel checks, the keys of the similar-cases self-check); the forward pass
(split over the lanes by the engine), the similar-cases search and the conformal sets then run once
per batch. Memory follows the batch size, not the number of items or their pixel count."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from model.labels import is_malignant
from model.nets.lanes import lanes_pool, run_parts
from model.aids.melanoma_flag import is_flagged
from model.inference.working import entropy, flip_views, uncertainty_reasons, working_image
from model.data.preprocess import ImageError, model_rgb, normalize_hwc
from model.inference.results import BatchPrediction


@dataclass
class Prepared:
    """A batch-review item ready for its batch."""
    rgb: np.ndarray
    original: tuple[int, int]
    notes: list[str]
    x: np.ndarray                   # 3 x H x W, normalised for the classifier
    pixels: tuple                   # QualityGate.pixel_checks
    sha: str | None                 # keys of the similar-cases self-check
    dhash: int | None


def classify_many(analyzer, items: Sequence[tuple[str, object]], tta: bool = False,
                  batch_size: int = 32) -> list[BatchPrediction]:
    """(name, bytes/array) pairs -> predictions with flags; unreadable files get `error`."""
    out: list[BatchPrediction | None] = [None] * len(items)
    lanes = getattr(analyzer.engine, "lanes", 1)
    for start in range(0, len(items), batch_size):
        idx = list(range(start, min(len(items), start + batch_size)))
        prepared = run_parts(lanes_pool(lanes), lanes, lambda i: prepare(analyzer, items[i][1]), idx)
        chunk = []
        for i, p in zip(idx, prepared):
            if isinstance(p, ImageError):
                out[i] = BatchPrediction(items[i][0], None, None, None, None, None, ["unreadable"], str(p))
            else:
                chunk.append((i, p))
        if chunk:
            classify_chunk(analyzer, items, chunk, tta, out)
    return out  # type: ignore[return-value]


def prepare(analyzer, src) -> Prepared | ImageError:
    """One item made ready for its batch (runs on a lane); the ImageError, returned, if it is unusable."""
    notes: list[str] = []
    try:
        rgb, original, _ = working_image(src, notes, say=False)
    except ImageError as e:
        return e
    b = analyzer.classifier
    small = model_rgb(rgb, b.input_size, b.domain)
    sha, dhash = analyzer.aids.self_check_keys(src, rgb)
    return Prepared(rgb, original, notes, normalize_hwc(small, b.mean, b.std), analyzer.gate.pixel_checks(small),
                    sha, dhash)


def classify_chunk(analyzer, items, chunk: list[tuple[int, Prepared]], tta: bool, out: list) -> None:
    """Classify one batch of prepared items and write their predictions into `out`."""
    bundle, classes = analyzer.classifier, analyzer.classes
    x = np.stack([p.x for _, p in chunk])
    res = analyzer.engine(x, ["logits", "features"])
    feats = res["features"]
    probs = torch.softmax(torch.from_numpy(res["logits"]) / bundle.temperature, 1)
    if tta:
        views = analyzer.engine(flip_views(torch.from_numpy(x)), ["logits"])["logits"]
        views = torch.softmax(torch.from_numpy(views) / bundle.temperature, 1)
        probs = (probs + views.view(3, len(chunk), -1).sum(0)) / 4
    probs = probs.numpy()
    dist = analyzer.gate.ood_distances(feats)
    dist = [None] * len(chunk) if dist is None else dist
    sets = analyzer.aids.sets_many(probs)
    similar = analyzer.aids.similar_many(feats, [p.sha for _, p in chunk], [p.rgb for _, p in chunk],
                                         [p.dhash for _, p in chunk])
    concepts, scores = analyzer.checklist.scores_many(feats)
    for (i, pr), p, d, ps, sim, cc, sc in zip(chunk, probs, dist, sets, similar, concepts, scores):
        checks = analyzer.gate.image_checks(pr.rgb, pr.original, d, True, pixels=pr.pixels)
        flags = analyzer.gate.with_mask_checks(checks, None)
        top = int(p.argmax())
        if uncertainty_reasons(p):
            flags.append("low confidence")
        out[i] = BatchPrediction(items[i][0], p, classes[top], float(p[top]),
                                 float(sum(q for c, q in zip(classes, p) if is_malignant(c))),
                                 entropy(p), flags, melanoma_flag=is_flagged(bundle.meta, classes, p),
                                 notes=pr.notes, prediction_sets=ps, similar=sim, concepts=cc, seven_point_score=sc)
