"""Artefacts a heatmap or a lesion outline can catch on: ink marks, rulers, dark vignette corners
and hair, found by image rules (OpenCV), per pixel, on the image at the working resolution.

- vignette: dark regions joined to the image border (the dermatoscope's round field of view);
- ink: strongly saturated blue, violet or green strokes (surgical markers), which skin and
  pigment never are;
- ruler: thin dark straight ticks, three or more of one direction with one end of each on a line;
- hair: thin dark elongated curves (black-hat filter) that are not ruler ticks.

The image is read at PROCESS_SIDE on its long side (the app's 200x150 uploads as they are), and the
masks are brought back to the image's size. Measured against labels set by eye on
tests/data/labelled by `python -m model.cli.label_agreement` (docs/artefacts-and-colours.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ARTEFACT_KINDS = ("ink", "ruler", "vignette", "hair")
PROCESS_SIDE = 256               # long side the rules work at (smaller images are taken as they are)
MIN_TICKS = 3
INK_SURROUND = 0.7               # ink's surroundings are at least this bright relative to the image's median
INK_SURROUND_MIN = 120          # and at least this bright (0-255)
TOUCH_SHARE = 0.02               # share of the outline's band an artefact must cover to count as touching
MIN_AREA = {"ink": 0.005, "ruler": 0.0, "vignette": 0.01, "hair": 0.004}   # image share for "present"


@dataclass
class Artefacts:
    """Per-kind pixel masks at the image's size, and the kinds present on the image."""
    masks: dict[str, np.ndarray]
    present: list[str]

    @property
    def union(self) -> np.ndarray:
        """Every artefact pixel (of the kinds present)."""
        shape = next(iter(self.masks.values())).shape
        out = np.zeros(shape, bool)
        for k in self.present:
            out |= self.masks[k]
        return out


def _ellipse(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def vignette_mask(gray: np.ndarray) -> np.ndarray:
    """Dark pixels joined to the image border: the unlit frame around a round field of view."""
    h, w = gray.shape
    centre = gray[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    dark = (gray < min(60.0, 0.4 * float(np.median(centre)))).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, _ellipse(1))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    keep = [i for i in border if i and stats[i, cv2.CC_STAT_AREA] >= 0.002 * h * w]
    return np.isin(lab, keep)


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """Strongly saturated, bright blue/violet/green strokes (markers) drawn on skin. Blue and gray-blue
    pigment can be as saturated, but it is darker (value under 110 of 255 on the labelled set) and
    lies in pigment: a stroke whose surroundings are darker than the skin is not ink."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = (hsv[..., i].astype(np.int16) for i in range(3))
    blue_violet = (h >= 100) & (h <= 140) & (s >= 100) & (v >= 110)
    green = (h >= 45) & (h < 95) & (s >= 90) & (v >= 80)
    ink = cv2.morphologyEx((blue_violet | green).astype(np.uint8), cv2.MORPH_OPEN, _ellipse(1))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    skin = float(np.median(gray))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = []
    for i in range(1, n):
        x, y, w, hh = stats[i, :4]
        x0, y0 = max(0, x - 4), max(0, y - 4)
        box = lab[y0: y + hh + 4, x0: x + w + 4] == i
        ring = (cv2.dilate(box.astype(np.uint8), _ellipse(3)) > 0) & ~box
        if np.median(gray[y0: y + hh + 4, x0: x + w + 4][ring]) >= max(INK_SURROUND * skin, INK_SURROUND_MIN):
            keep.append(i)
    return cv2.dilate(np.isin(lab, keep).astype(np.uint8), _ellipse(1)) > 0


def thin_dark(gray: np.ndarray) -> np.ndarray:
    """Thin dark lines: the black-hat response (closing minus image) over a threshold."""
    side = max(gray.shape)
    r = max(2, round(side / 60))
    bh = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, _ellipse(r))
    return bh > max(18.0, 2.5 * float(np.median(bh)) + 8)


def _segments(lines: np.ndarray, side: int):
    """Components of a thin-line mask with their area, long side, thinness, angle and the two ends
    of their long axis (the lower projection first, so parallel segments list their ends alike)."""
    n, lab, stats, cents = cv2.connectedComponentsWithStats(lines.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        area = stats[i, cv2.CC_STAT_AREA]
        if area < 4:
            continue
        ys, xs = np.nonzero(lab[stats[i, 1]: stats[i, 1] + stats[i, 3], stats[i, 0]: stats[i, 0] + stats[i, 2]] == i)
        pts = np.column_stack([xs + stats[i, 0], ys + stats[i, 1]]).astype(np.float32)
        (cx, cy), (a, b), angle = cv2.minAreaRect(pts)
        long, short = max(a, b, 1.0), min(a, b)
        if a < b:
            angle += 90.0
        d = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))], np.float32)
        proj = (pts - (cx, cy)) @ d
        ends = (np.array([cx, cy]) + d * proj.min(), np.array([cx, cy]) + d * proj.max())
        out.append({"i": i, "area": int(area), "long": long / side, "width": area / long,
                    "straight": short / long, "angle": angle % 180.0, "centre": cents[i], "ends": ends})
    return lab, out


def _ruler_ticks(segs: list[dict], shape: tuple[int, int]) -> list[int]:
    """Labels of short straight segments that line up as ruler ticks: >= MIN_TICKS of one direction
    (within 10 degrees) within 30% of the side of one another, one end of each on a line across the
    ticks (the ruler's edge: ticks of a scale alternate in length, so their centres do not line up,
    their ends on the edge do). Hair is longer, bent or scattered."""
    side = max(shape)
    ticks = [s for s in segs if 0.015 <= s["long"] <= 0.15 and s["straight"] <= 0.3]
    best: list[dict] = []
    for s in ticks:
        group = [t for t in ticks if _angle_gap(t["angle"], s["angle"]) <= 10
                 and np.hypot(*(t["centre"] - s["centre"])) <= 0.3 * side]
        if len(group) < MIN_TICKS or len(group) <= len(best):
            continue
        for end in (0, 1):
            e = np.array([t["ends"][end] for t in group], np.float64)
            if _line_residual(e) <= 0.02 * side and _across(e, s["angle"]) and np.ptp(e, 0).max() >= 0.02 * side:
                best = group
                break
    return [t["i"] for t in best]


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _line_residual(points: np.ndarray) -> float:
    centred = points - points.mean(0)
    return float(np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(points)))


def _across(points: np.ndarray, tick_angle: float) -> bool:
    """The row of tick centres runs across the ticks (at least 45 degrees from their direction)."""
    centred = points - points.mean(0)
    direction = np.linalg.svd(centred)[2][0]
    row_angle = np.degrees(np.arctan2(direction[1], direction[0])) % 180.0
    return _angle_gap(row_angle, tick_angle) >= 45


def detect_artefacts(rgb: np.ndarray) -> Artefacts:
    """Ink, ruler, vignette and hair masks of an RGB uint8 image, and the kinds present."""
    h, w = rgb.shape[:2]
    scale = min(1.0, PROCESS_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    side = max(gray.shape)
    masks = {"vignette": vignette_mask(gray), "ink": ink_mask(small)}
    lines = thin_dark(gray) & ~masks["vignette"] & ~(cv2.dilate(masks["ink"].astype(np.uint8), _ellipse(3)) > 0)
    lab, segs = _segments(lines, side)
    ticks = _ruler_ticks(segs, gray.shape)
    masks["ruler"] = cv2.dilate(np.isin(lab, ticks).astype(np.uint8), _ellipse(1)) > 0
    hairs = [s["i"] for s in segs if s["i"] not in ticks and s["long"] >= 0.08 and s["width"] <= 0.012 * side + 1.5]
    masks["hair"] = np.isin(lab, hairs)
    present = [k for k in ARTEFACT_KINDS
               if masks[k].mean() > MIN_AREA[k] and (k != "ruler" or len(ticks) >= MIN_TICKS)]
    if scale < 1:
        masks = {k: cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for k, m in masks.items()}
    return Artefacts({k: masks[k] for k in ARTEFACT_KINDS}, present)


def outline_touches(artefacts: Artefacts, mask: np.ndarray | None) -> list[str]:
    """Kinds present whose pixels cover at least TOUCH_SHARE of a thin band around the lesion's
    outline: there the outline (and a heatmap that follows it) may have caught on the artefact."""
    if mask is None or not np.any(mask):
        return []
    m = np.asarray(mask, np.uint8)
    r = max(2, round(max(m.shape) / 100))
    band = (cv2.dilate(m, _ellipse(r)) > 0) & ~(cv2.erode(m, _ellipse(r)) > 0)
    n = int(band.sum())
    return [k for k in artefacts.present if n and (artefacts.masks[k] & band).sum() >= TOUCH_SHARE * n]
