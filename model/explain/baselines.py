"""Maps that know nothing of the model, scored by ROAD exactly as the CAMs are, and the paired
intervals that say whether a CAM beats them.

Dermoscopy centres the lesion, so a heatmap that knows only "the middle of the picture" can score
well on ROAD. Three baselines, each HxW in [0, 1] at the classifier's input size:

- `centre`: a centred Gaussian blob (sigma a quarter of each side);
- `lesion_mask`: the U-Net's lesion mask, blurred (sigma 5% of the shorter side), so that ROAD's
  percentile cuts fall inside and around the lesion rather than on ties; an empty mask scores as
  the centre blob (counted in `fallback`);
- `random`: uniform noise on the last stage's grid (as coarse as a CAM there), upsampled
  bilinearly, seeded per image.

They are scored on the same image, class (the top class), percentiles and imputation as the
methods (`model.explain.road.road_many`), and `paired_differences` gives each method's mean ROAD
minus each baseline's over the images both have, with a percentile bootstrap 95% interval.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Sequence

import numpy as np

from model.data.preprocess import resize_map

BASELINES = ("centre", "lesion_mask", "random")
CENTRE_SIGMA = 0.25      # of each side
MASK_BLUR = 0.05         # of the shorter side
N_BOOT = 2000


def image_seed(image_id: str, seed: int = 0) -> int:
    """A per-image seed that is the same on every machine and Python (not `hash`, which is salted)."""
    return zlib.crc32(f"{seed}/{image_id}".encode("utf-8"))


def centre_map(size_hw: Sequence[int], sigma: float = CENTRE_SIGMA) -> np.ndarray:
    h, w = size_hw
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (sigma * h)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (sigma * w)
    return np.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)).astype(np.float32)


def lesion_map(mask: np.ndarray | None, size_hw: Sequence[int], blur: float = MASK_BLUR) -> np.ndarray | None:
    """The blurred lesion mask at size_hw, scaled to [0, 1]; None when the mask is empty."""
    import cv2

    if mask is None or not np.any(mask):
        return None
    m = resize_map(np.asarray(mask, np.float32), size_hw)
    sigma = max(blur * min(size_hw), 0.5)
    m = cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    m = m - m.min()
    return (m / max(float(m.max()), 1e-7)).astype(np.float32)


def random_map(size_hw: Sequence[int], grid_hw: Sequence[int], seed: int) -> np.ndarray:
    grid = np.random.default_rng(seed).random(tuple(grid_hw), dtype=np.float32)
    return np.clip(resize_map(grid, size_hw), 0, 1).astype(np.float32)


def baseline_maps(size_hw: Sequence[int], grid_hw: Sequence[int], mask: np.ndarray | None,
                  seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """{baseline: map} for one image, and whether the lesion map fell back to the centre blob."""
    centre = centre_map(size_hw)
    lesion = lesion_map(mask, size_hw)
    return {"centre": centre, "lesion_mask": centre if lesion is None else lesion,
            "random": random_map(size_hw, grid_hw, seed)}, lesion is None


def summarise(rows: Iterable[dict]) -> dict[str, dict]:
    """{baseline: {road, morf, lerf, road_sem, n[, fallback]}} from per-image rows."""
    acc: dict[str, list[dict]] = {}
    for r in rows:
        if np.isfinite(r["road"]):
            acc.setdefault(r["baseline"], []).append(r)
    out = {}
    for name in BASELINES:
        rs = acc.get(name, [])
        if not rs:
            continue
        road = np.array([r["road"] for r in rs])
        out[name] = {"road": round(float(road.mean()), 4),
                     "morf": round(float(np.mean([r["morf"] for r in rs])), 4),
                     "lerf": round(float(np.mean([r["lerf"] for r in rs])), 4),
                     "road_sem": round(float(road.std(ddof=1) / np.sqrt(len(rs))), 4) if len(rs) > 1 else None,
                     "n": len(rs)}
        if name == "lesion_mask":
            out[name]["fallback"] = sum(bool(r.get("fallback")) for r in rs)
    return out


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of `values`."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for i in range(0, n_boot, 250):  # in chunks: 250 x n indices at a time
        k = min(250, n_boot - i)
        means[i:i + k] = values[rng.integers(0, len(values), size=(k, len(values)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_differences(method_rows: Iterable[dict], baseline_rows: Iterable[dict], n_boot: int = N_BOOT,
                       seed: int = 0) -> list[dict]:
    """Per (method, layer) and baseline: mean ROAD(method) - ROAD(baseline) over the images both
    were scored on, with a paired percentile bootstrap 95% interval (images resampled)."""
    base: dict[str, dict[str, float]] = {}
    for r in baseline_rows:
        if np.isfinite(r["road"]):
            base.setdefault(r["baseline"], {})[r["image"]] = r["road"]
    meth: dict[tuple[str, str], dict[str, float]] = {}
    for r in method_rows:
        if np.isfinite(r["road"]):
            meth.setdefault((r["method"], r["layer"]), {})[r["image"]] = r["road"]
    out = []
    for (m, layer), scores in meth.items():
        for b in BASELINES:
            common = sorted(set(scores) & set(base.get(b, {})))
            if len(common) < 2:
                continue
            d = np.array([scores[i] - base[b][i] for i in common])
            lo, hi = bootstrap_mean_ci(d, n_boot, seed)
            out.append({"method": m, "layer": layer, "baseline": b, "difference": round(float(d.mean()), 4),
                        "ci": [round(lo, 4), round(hi, 4)], "n": len(common)})
    return out
