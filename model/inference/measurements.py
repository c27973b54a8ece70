"""Measurements derived from a lesion mask (pixels: no physical scale is known) and the share
of a heatmap that falls on the lesion. Plain numpy/OpenCV."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from model.inference.colours import lesion_colours   # the six dermoscopic colours (CIELAB rules)


@dataclass
class Measurements:
    area_px: int
    area_pct: float
    longest_diameter_px: float
    asymmetry_major: float        # 0 = mirror-symmetric about the major principal axis, 1 = no overlap
    asymmetry_minor: float
    compactness: float            # perimeter^2 / (4 pi area): 1 for a circle, larger = more irregular border
    solidity: float               # area / convex-hull area: 1 = convex, lower = notched border
    colours: list[str]            # dermoscopic colours present
    colour_std: float             # mean per-channel standard deviation inside the lesion (0..1)

    @property
    def asymmetry(self) -> float:
        return (self.asymmetry_major + self.asymmetry_minor) / 2


def _reflect(mask: np.ndarray, centre: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Mirror a mask across the line through `centre` along unit vector `direction` (x, y)."""
    u = direction / np.linalg.norm(direction)
    r = 2 * np.outer(u, u) - np.eye(2)
    t = centre - r @ centre
    m = np.hstack([r, t[:, None]]).astype(np.float32)
    return cv2.warpAffine(mask.astype(np.uint8), m, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST) > 0


def asymmetry(mask: np.ndarray) -> tuple[float, float]:
    """Share of the lesion not covered by its mirror image about the major and minor principal axes.
    The centroid and covariance come from OpenCV's image moments (exact integer sums; the
    covariance within ~1e-15 of np.cov over the pixel coordinates, 10x faster)."""
    mask = np.asarray(mask, bool)
    m = cv2.moments(mask.view(np.uint8), binaryImage=True)
    n = m["m00"]
    if n < 3:
        return 0.0, 0.0
    centre = np.array([m["m10"] / n, m["m01"] / n])
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    major, minor = evecs[:, 1], evecs[:, 0]
    area = n
    return tuple(float(1 - np.logical_and(mask, _reflect(mask, centre, axis)).sum() / area)
                 for axis in (major, minor))


def longest_diameter(contour: np.ndarray) -> float:
    hull = cv2.convexHull(contour).reshape(-1, 2).astype(np.float64)
    if len(hull) < 2:
        return 0.0
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def colour_variegation(rgb: np.ndarray, mask: np.ndarray) -> tuple[list[str], float]:
    """The dermoscopic colours present in the lesion (model.inference.colours: CIELAB reference
    colours, distance thresholds, specular highlights left out, a minimum share per colour), and the
    mean per-channel spread (0..1) of the lesion's pixels."""
    inside = np.flatnonzero(mask)
    if len(inside) == 0:
        return [], 0.0
    pixels = np.take(np.ascontiguousarray(rgb).reshape(-1, 3), inside, axis=0).reshape(-1, 1, 3)  # = rgb[mask], faster
    _, std = cv2.meanStdDev(pixels)
    return lesion_colours(rgb, np.asarray(mask, bool)), float(std.mean() / 255.0)


def measure_lesion(mask: np.ndarray, rgb: np.ndarray) -> Measurements | None:
    """Shape and colour measurements of the lesion; None when the mask is empty."""
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if area == 0:
        return None
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(contour, closed=True)
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    a_major, a_minor = asymmetry(mask)
    # sample at most ~200k pixels for the colour statistics
    step = max(1, int(np.sqrt(area / 200_000)))
    colours, colour_std = colour_variegation(rgb[::step, ::step], mask[::step, ::step])
    return Measurements(
        area_px=area, area_pct=100.0 * area / mask.size,
        longest_diameter_px=longest_diameter(contour),
        asymmetry_major=a_major, asymmetry_minor=a_minor,
        compactness=float(perimeter ** 2 / (4 * np.pi * area)),
        solidity=float(area / hull_area) if hull_area > 0 else 1.0,
        colours=colours, colour_std=colour_std)
