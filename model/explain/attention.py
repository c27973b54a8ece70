"""How much of a heatmap falls on the lesion: the share of its weight inside the lesion mask, with
artefact pixels (ink, rulers, vignette, hair: model.inference.artefacts) taken out of the lesion and
counted as their own share, so heat on a ruler inside the outline is not heat on the lesion."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class HeatShares:
    """Shares of one heatmap's weight: on the lesion (artefacts excluded), on artefacts (inside or
    outside the outline), and elsewhere. The three add up to 1."""
    lesion: float
    artefacts: float
    elsewhere: float

    @property
    def off_lesion(self) -> float:
        """Heat not on the lesion: on artefacts or elsewhere."""
        return self.artefacts + self.elsewhere


def attention_on_lesion(heatmap: np.ndarray, mask: np.ndarray, artefacts: np.ndarray | None = None) -> float | None:
    """Share of the heatmap's total weight inside the mask and off any artefact pixel (same shapes);
    None if no heat or no mask."""
    return attention_shares({"_": heatmap}, mask, artefacts)["_"]


def attention_shares(heatmaps: dict[str, np.ndarray], mask: np.ndarray | None,
                     artefacts: np.ndarray | None = None) -> dict[str, float | None]:
    """attention_on_lesion for several heatmaps over one mask (None each without a mask)."""
    shares = heat_shares(heatmaps, mask, artefacts)
    return {k: None if s is None else s.lesion for k, s in shares.items()}


def heat_shares(heatmaps: dict[str, np.ndarray], mask: np.ndarray | None,
                artefacts: np.ndarray | None = None) -> dict[str, HeatShares | None]:
    """HeatShares of each heatmap (None without a mask, an empty mask or any heat). OpenCV's sums
    accumulate in double: the same shares as numpy's float64 sums to ~1e-15, 3x faster."""
    if mask is None:
        return {k: None for k in heatmaps}
    lesion = np.ascontiguousarray(mask, bool)
    art = np.zeros_like(lesion) if artefacts is None else np.ascontiguousarray(artefacts, bool)
    on_lesion = (lesion & ~art).view(np.uint8)
    if not np.count_nonzero(lesion):
        return {k: None for k in heatmaps}
    out: dict[str, HeatShares | None] = {}
    for k, heat in heatmaps.items():
        h = np.maximum(np.asarray(heat, np.float32), 0)
        total = cv2.sumElems(h)[0]
        if total <= 0:
            out[k] = None
            continue
        lesion_share, art_share = (_weight(h, m) / total for m in (on_lesion, art.view(np.uint8)))
        out[k] = HeatShares(lesion_share, art_share, max(0.0, 1.0 - lesion_share - art_share))
    return out


def _weight(heat: np.ndarray, m8: np.ndarray) -> float:
    n = int(np.count_nonzero(m8))
    return float(cv2.mean(heat, m8)[0] * n) if n else 0.0


def off_lesion_limits(meta: dict) -> dict[str, float]:
    """Per CAM method, the share of heat off the lesion above which a heatmap is unusual: the test
    split's 90th percentile, as `python -m model.cli.heat_in_lesion` stored it ({} when not measured)."""
    warning = (meta.get("interpretability") or {}).get("heat_warning") or {}
    return {m: float(v) for m, v in (warning.get("off_lesion_limit") or {}).items()}
