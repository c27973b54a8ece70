"""The three checks on the explanations over a split, image by image, resumable.

- `baseline_rows`: ROAD of the maps that know nothing of the model (model.explain.baselines);
- `stress_rows`: calibrated probabilities of each what-if image (model.explain.confounders);
- `sanity_rows`: rank correlations of the trained and cascade-randomised models' CAMs
  (model.explain.sanity).

Every finished image's rows are appended to one JSON-lines cache (model.explain.road_split's
format and lock), under a key tied to the weights and the settings, so a stopped run continues
where it stopped. `python -m model.cli.explanation_checks` is the command.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.data.dataset import Record
from model.data.preprocess import ImageError, decode_image, normalize, to_uint8_batch
from model.explain.baselines import N_BOOT, baseline_maps, bootstrap_mean_ci, image_seed
from model.explain.confounders import WHAT_IFS, WhatIfError, what_if
from model.explain.road import PERCENTILES, road_many
from model.explain.road_split import append, read_cache


def cached_rows(records: Sequence[Record], cache: Path | None, key: str,
                per_image: Callable[[Record, np.ndarray], list[dict] | None], desc: str,
                deadline: float | None = None, progress: bool = True) -> list[dict]:
    """Rows for `records`: cached images are read, the others computed (in the given order) and
    appended, one image at a time, until `deadline` (time.time()). Unreadable images are skipped."""
    done: dict[str, list[dict]] = {}
    for row in read_cache(cache, key):
        done.setdefault(row["image"], []).append(row)
    out = [row for r in records for row in done.get(r.image_id, [])]
    todo = [r for r in records if r.image_id not in done]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    for rec in tqdm(todo, desc=desc, disable=not progress or not todo, mininterval=10):
        if deadline is not None and time.time() > deadline:
            break
        try:
            rgb = decode_image(rec.image_path)
        except (ImageError, OSError, ValueError):
            continue
        rows = per_image(rec, rgb)
        if rows is None:
            continue
        rows = [{"key": key, "image": rec.image_id, **row} for row in rows]
        if cache is not None:
            append(cache, "".join(json.dumps(row) + "\n" for row in rows))
        out.extend(rows)
    return out


def model_input(bundle, rgb: np.ndarray) -> torch.Tensor:
    """1x3xHxW normalised, through the one input path (as the faithfulness run prepares it)."""
    return normalize(to_uint8_batch([rgb], bundle.input_size, bundle.domain), bundle.mean, bundle.std)


def top_class(bundle, x: torch.Tensor) -> int:
    """The trained model's top class (the class the faithfulness run explains)."""
    with torch.inference_mode():
        return int(bundle.model(x)[0].argmax())


def baseline_image(analyzer, grid_hw: Sequence[int], seed: int) -> Callable:
    """per_image for `cached_rows`: ROAD of the three baselines for the top class."""
    from model.explain.road_imputer import keep_factors

    b = analyzer.classifier
    keep_factors(2 * len(PERCENTILES) * 3 + 2)  # the centre blob's removals are the same on every image

    def run(rec: Record, rgb: np.ndarray) -> list[dict]:
        x = model_input(b, rgb)
        cls = top_class(b, x)
        maps, fallback = baseline_maps(b.input_size, grid_hw, analyzer.segment(rgb), image_seed(rec.image_id, seed))
        scores = road_many(analyzer.engine, x, maps, cls, b.temperature, PERCENTILES)
        return [{"baseline": k, "road": s["road"], "morf": s["morf"], "lerf": s["lerf"], "cls": cls,
                 **({"fallback": True} if k == "lesion_mask" and fallback else {})} for k, s in scores.items()]
    return run


def stress_image(analyzer, seed: int) -> Callable:
    """per_image for `cached_rows`: calibrated probabilities of the original and every what-if
    (the masked ones need a lesion: skipped, and counted by their smaller n, where none is found)."""
    b = analyzer.classifier

    def run(rec: Record, rgb: np.ndarray) -> list[dict]:
        mask = analyzer.segment(rgb)
        images, names = [rgb], ["original"]
        for name in WHAT_IFS:
            try:
                images.append(what_if(name, rgb, mask, image_seed(rec.image_id, seed)))
                names.append(name)
            except WhatIfError:
                continue
        x = normalize(to_uint8_batch(images, b.input_size, b.domain), b.mean, b.std)
        logits = torch.from_numpy(analyzer.engine(x, ["logits"])["logits"]).float()
        probs = torch.softmax(logits / b.temperature, 1).numpy()
        label = b.classes.index(rec.label) if rec.label in b.classes else None
        return [{"variant": n, "label": label, "probs": [round(float(p), 5) for p in pr]}
                for n, pr in zip(names, probs)]
    return run


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes]))


def stress_summary(rows: Sequence[dict], classes: Sequence[str], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{what-if: {flip_rate, delta_mel, delta_mel_ci, delta_bacc, n}}, each over the images that
    have both the original and that what-if (and a known label, for the balanced accuracy)."""
    mel = list(classes).index("mel") if "mel" in classes else None
    by_image: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_image.setdefault(r["image"], {})[r["variant"]] = r
    out = {}
    for name in WHAT_IFS:
        pairs = [(v["original"], v[name]) for v in by_image.values() if "original" in v and name in v]
        if not pairs:
            continue
        p0 = np.array([a["probs"] for a, _ in pairs])
        p1 = np.array([b["probs"] for _, b in pairs])
        entry = {"flip_rate": round(float((p0.argmax(1) != p1.argmax(1)).mean()), 4), "n": len(pairs)}
        if mel is not None:
            d = p1[:, mel] - p0[:, mel]
            lo, hi = bootstrap_mean_ci(d, n_boot, seed) if len(d) > 1 else (float(d[0]), float(d[0]))
            entry.update(delta_mel=round(float(d.mean()), 4), delta_mel_ci=[round(lo, 4), round(hi, 4)])
        labelled = [i for i, (a, _) in enumerate(pairs) if a.get("label") is not None]
        if labelled:
            y = np.array([pairs[i][0]["label"] for i in labelled])
            entry["delta_bacc"] = round(balanced_accuracy(y, p1[labelled].argmax(1))
                                        - balanced_accuracy(y, p0[labelled].argmax(1)), 4)
        out[name] = entry
    return out


def sanity_image(bundle, randomised: Sequence[torch.nn.Module]) -> Callable:
    """per_image for `cached_rows`: one row per (method, layer) with the correlation per depth."""
    from model.explain.cams import CAM_METHODS
    from model.explain.sanity import image_correlations

    def run(rec: Record, rgb: np.ndarray) -> list[dict]:
        corr, cls = image_correlations(bundle.model, randomised, model_input(bundle, rgb), list(CAM_METHODS))
        return [{"method": m, "layer": l, "rho": rho, "cls": cls} for (m, l), rho in corr.items()]
    return run
