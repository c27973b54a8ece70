"""What-if images: known dermoscopy confounders drawn on an image, and the lesion or its
surroundings alone. Every drawing is seeded, so one (image, name, seed) always gives the same
pixels (tests pin them), and every size is relative to the image, so a what-if looks the same at
200x150 and at 4000x3000.

- `ruler`: a pale graduated scale along one edge, with ticks;
- `ink`: surgical skin marker (gentian violet) - an arc around the middle and a few dots
  (Winkler et al., JAMA Dermatology 2019: markings raised a network's melanoma scores);
- `hair`: dark curved hairs across the image;
- `vignette`: the dark corners of a dermoscope's round field of view;
- `bubbles`: immersion-fluid air bubbles, bright-rimmed circles with a highlight;
- `lesion_only`: the U-Net's lesion kept, the rest filled with the surrounding skin's colour;
- `surroundings_only`: the lesion removed, filled in from the surrounding skin (OpenCV inpainting).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

ARTEFACTS = ("ruler", "ink", "hair", "vignette", "bubbles")
MASKED = ("lesion_only", "surroundings_only")
WHAT_IFS = ARTEFACTS + MASKED
NAMES = {"ruler": "ruler", "ink": "surgical ink marking", "hair": "hair", "vignette": "dark vignette",
         "bubbles": "air bubbles", "lesion_only": "lesion only", "surroundings_only": "surroundings only"}
INPAINT_SIDE = 160   # the lesion is inpainted at most this many pixels across (then scaled back): speed


class WhatIfError(ValueError):
    """A what-if that cannot be drawn on this image (e.g. no lesion was found for lesion-only)."""


def _blend(rgb: np.ndarray, layer: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    a = np.asarray(alpha, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    out = rgb.astype(np.float32) * (1 - a) + layer.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def ruler(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    band = max(int(0.09 * s), 3)
    top = bool(rng.integers(2))
    y0 = int(rng.uniform(0.02, 0.06) * h) if top else h - band - int(rng.uniform(0.02, 0.06) * h)
    layer = rgb.copy()
    cv2.rectangle(layer, (0, y0), (w - 1, y0 + band), (236, 232, 214), thickness=-1)
    step = max(w / 40, 2.0)
    x, i = float(rng.uniform(0, step)), 0
    while x < w:
        length = band * (0.8 if i % 10 == 0 else 0.55 if i % 5 == 0 else 0.3)
        y_edge = y0 if top else y0 + band
        y_tip = y_edge + length if top else y_edge - length
        cv2.line(layer, (int(x), int(y_edge)), (int(x), int(y_tip)), (30, 30, 30), max(s // 200, 1), cv2.LINE_AA)
        x, i = x + step, i + 1
    return _blend(rgb, layer, 0.9)


def ink(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    layer, alpha = rgb.copy(), np.zeros((h, w), np.float32)
    colour = (88, 44, 140)
    centre = (int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.4, 0.6)))
    axes = (int(w * rng.uniform(0.32, 0.42)), int(h * rng.uniform(0.32, 0.42)))
    start = float(rng.uniform(0, 360))
    end = start + float(rng.uniform(90, 160))
    thick = max(int(0.03 * s), 1)
    cv2.ellipse(layer, centre, axes, 0, start, end, colour, thick, cv2.LINE_AA)
    cv2.ellipse(alpha, centre, axes, 0, start, end, 0.8, thick, cv2.LINE_AA)
    for _ in range(3):
        p = (int(rng.uniform(0.05, 0.95) * w), int(rng.uniform(0.05, 0.95) * h))
        r = max(int(rng.uniform(0.015, 0.03) * s), 1)
        cv2.circle(layer, p, r, colour, -1, cv2.LINE_AA)
        cv2.circle(alpha, p, r, 0.8, -1, cv2.LINE_AA)
    return _blend(rgb, layer, alpha)


def hair(rgb: np.ndarray, rng: np.random.Generator, n: int = 12) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    layer = rgb.copy()
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(n):
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, 2) * (w, h) for _ in range(3))
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2).astype(np.int32)
        shade = int(rng.integers(10, 45))
        cv2.polylines(layer, [pts], False, (shade + 12, shade + 4, shade), max(int(s / 150), 1), cv2.LINE_AA)
    return layer


def vignette(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    radius = float(rng.uniform(0.36, 0.42)) * np.hypot(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    soft = 0.06 * np.hypot(h, w)
    dark = np.clip((d - radius + soft) / soft, 0, 1)  # 0 inside the field of view, 1 outside
    return _blend(rgb, np.full_like(rgb, 8), 0.95 * dark)


def bubbles(rgb: np.ndarray, rng: np.random.Generator, n: int = 6) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    layer, alpha = rgb.copy(), np.zeros((h, w), np.float32)
    for _ in range(n):
        c = (int(rng.uniform(0.05, 0.95) * w), int(rng.uniform(0.05, 0.95) * h))
        r = max(int(rng.uniform(0.04, 0.12) * s), 2)
        rim = max(r // 6, 1)
        cv2.circle(layer, c, r, (250, 250, 250), rim, cv2.LINE_AA)
        cv2.circle(alpha, c, r, 0.7, rim, cv2.LINE_AA)
        hl = (c[0] - r // 3, c[1] - r // 3)
        cv2.circle(layer, hl, max(r // 5, 1), (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(alpha, hl, max(r // 5, 1), 0.85, -1, cv2.LINE_AA)
    return _blend(rgb, layer, alpha)


def _lesion(mask: np.ndarray | None, shape) -> np.ndarray:
    from model.data.preprocess import resize_mask

    if mask is None or not np.any(mask):
        raise WhatIfError("no lesion was found in this image, so the lesion and its surroundings cannot be separated")
    m = np.asarray(mask) > 0
    return m if m.shape == tuple(shape[:2]) else resize_mask(m.astype(np.uint8), shape[:2]) > 0


def lesion_only(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The lesion as it is; everything else one flat colour: the median of the skin around it."""
    import cv2

    m = _lesion(mask, rgb.shape)
    ring = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(min(rgb.shape[:2]) // 25, 2)) > 0
    skin = rgb[ring & ~m]
    skin = skin if len(skin) else rgb[~m] if np.any(~m) else rgb.reshape(-1, 3)
    out = np.empty_like(rgb)
    out[:] = np.median(skin, axis=0).astype(np.uint8)
    out[m] = rgb[m]
    return out


def surroundings_only(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The lesion (and a thin margin) filled in from the skin around it, by OpenCV's Telea
    inpainting at a reduced size; the rest of the image as it is."""
    import cv2

    m = _lesion(mask, rgb.shape)
    h, w = rgb.shape[:2]
    f = min(1.0, INPAINT_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(int(w * f), 1), max(int(h * f), 1)), interpolation=cv2.INTER_AREA) if f < 1 else rgb
    sm = cv2.resize(m.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST) if f < 1 else m.astype(np.uint8)
    sm = cv2.dilate(sm, np.ones((3, 3), np.uint8), iterations=2)
    filled = cv2.inpaint(small, sm, 5, cv2.INPAINT_TELEA)
    if f < 1:
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    big = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(int(2 / f), 2)) > 0
    out = rgb.copy()
    out[big] = filled[big]
    return out


DRAW: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "ruler": ruler, "ink": ink, "hair": hair, "vignette": vignette, "bubbles": bubbles}


def what_if(name: str, rgb: np.ndarray, mask: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The image `rgb` (HxWx3 uint8) with what-if `name`; `mask`: the lesion (needed by the masked
    ones). The same (rgb, name, mask, seed) always gives the same pixels."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if name in DRAW:
        return DRAW[name](rgb, np.random.default_rng([seed, WHAT_IFS.index(name)]))
    if name == "lesion_only":
        return lesion_only(rgb, mask)
    if name == "surroundings_only":
        return surroundings_only(rgb, mask)
    raise ValueError(f"unknown what-if {name!r}; choose from {', '.join(WHAT_IFS)}")
