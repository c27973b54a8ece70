"""The one input path: any decoded image -> the pixels the networks were trained on.

The training images are 200x150 JPEGs (quality 75), made from 600x450 originals with PIL's
bicubic resize. An upload from a dermatoscope is larger and better compressed: another domain.
`to_training_domain` brings every image, whatever its size or JPEG quality, through the same
pipeline before the networks' own resize:

1. capture: an image larger than the training images (in pixel area) is resized to their size with
   PIL's bicubic filter ("aspect": stretched by default, as the networks' own resize did; or its
   own aspect ratio kept at that area, or centre-cropped to theirs first), then round-tripped
   through JPEG at their quality. Images at or below that size pass untouched (the training
   images themselves, so training and inference share this step).
2. colour constancy (a bundle setting, off unless the bundle says so): Shades of Gray
   (Finlayson & Trezzi 2004) with Minkowski norm p.

The settings live in the bundle's `meta.json` under `preprocessing`; `DEFAULT_DOMAIN` describes
the HAM10000 200x150 files that every shipped model was trained on.
"""
from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
from PIL import Image

# the pipeline the HAM10000 200x150 training files came through (see ../shared/docs/probes.md):
# PIL bicubic from 600x450, JPEG quality 75
DEFAULT_DOMAIN: dict[str, Any] = {"capture_size": [150, 200], "resample": "bicubic", "jpeg_quality": 75,
                                  "aspect": "stretch", "colour_constancy": None}
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX}


# a bundle whose meta.json has no `preprocessing` predates the one input path: its images were only resized
LEGACY_DOMAIN: dict[str, Any] = {"capture_size": None, "resample": "bicubic", "jpeg_quality": None,
                                 "aspect": "keep", "colour_constancy": None}
ASPECTS = ("keep", "stretch", "crop")


def domain_of(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A bundle's input-domain settings (meta.json `preprocessing`), defaults filled in."""
    if not (meta or {}).get("preprocessing"):
        return dict(LEGACY_DOMAIN)
    out = dict(DEFAULT_DOMAIN)
    out.update(meta["preprocessing"])
    return out


def capture_size(rgb_hw: tuple[int, int], capture_hw, aspect: str = "keep") -> tuple[int, int] | None:
    """The (height, width) an image of size `rgb_hw` is brought to, or None when it is small enough
    already: the training images' pixel area at the image's own aspect ratio ("keep"), or the
    training images' size itself ("stretch", "crop": after a centre crop to their aspect ratio)."""
    h, w = int(rgb_hw[0]), int(rgb_hw[1])
    ch, cw = int(capture_hw[0]), int(capture_hw[1])
    if h * w <= ch * cw:
        return None
    if aspect in ("stretch", "crop"):
        return ch, cw
    k = (ch * cw / float(h * w)) ** 0.5
    return max(1, round(h * k)), max(1, round(w * k))


def centre_crop(rgb: np.ndarray, capture_hw) -> np.ndarray:
    """The largest centred crop with the aspect ratio of `capture_hw` (height, width)."""
    h, w = rgb.shape[:2]
    target = capture_hw[1] / capture_hw[0]
    if w / h > target:
        nw = max(1, round(h * target))
        x0 = (w - nw) // 2
        return rgb[:, x0:x0 + nw]
    nh = max(1, round(w / target))
    y0 = (h - nh) // 2
    return rgb[y0:y0 + nh]


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an RGB uint8 image as a baseline JPEG (libjpeg's standard tables)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def shades_of_gray(rgb: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades of Gray colour constancy: divide each channel by its Minkowski p-norm mean (the
    illuminant estimate), scaled so a neutral illuminant leaves the image unchanged."""
    x = rgb.astype(np.float32)
    illum = np.power(np.mean(np.power(x.reshape(-1, 3), p), axis=0), 1.0 / p)
    illum = illum / max(float(np.sqrt(np.sum(illum ** 2))), 1e-6)
    gain = 1.0 / (np.maximum(illum, 1e-6) * np.sqrt(3.0))
    return np.clip(x * gain, 0, 255).astype(np.uint8)


def to_training_domain(rgb: np.ndarray, settings: Mapping[str, Any] | None = None) -> np.ndarray:
    """Bring an HxWx3 uint8 RGB image into the training images' domain (see the module doc).

    `settings` is `domain_of(meta)`; None leaves the image as it is."""
    if settings is None:
        return rgb
    s = settings
    aspect = s.get("aspect", "keep")
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect handling {aspect!r} ({', '.join(ASPECTS)})")
    size = capture_size(rgb.shape[:2], s["capture_size"], aspect) if s.get("capture_size") else None
    if size is not None:
        if aspect == "crop":
            rgb = centre_crop(rgb, s["capture_size"])
        img = Image.fromarray(np.ascontiguousarray(rgb)).resize((size[1], size[0]), RESAMPLE[s.get("resample", "bicubic")])
        rgb = np.asarray(img)
        if s.get("jpeg_quality"):
            rgb = jpeg_round_trip(rgb, s["jpeg_quality"])
    cc = s.get("colour_constancy")
    if cc:
        if cc.get("method") != "shades_of_gray":
            raise ValueError(f"unknown colour constancy {cc.get('method')!r}")
        rgb = shades_of_gray(rgb, float(cc.get("p", 6)))
    return rgb
