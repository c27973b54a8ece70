"""A decoded PIL image of any mode -> 8-bit pixels (mode L or RGB), judged from the pixel values:
high bit depth scaled on its finite values (NaN/infinite pixels masked, never cast), transparency
flattened onto white; and whether an RGB array has any colour at all."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S"}
MAX_NONFINITE_SHARE = 0.05   # more NaN/infinite pixels than this and the image is refused
GRAY_TOLERANCE = 4           # channel spread (of 255) still counted as gray: JPEG rounding
GRAY_SHARE = 0.01            # an image with colour in at most this share of its pixels is grayscale


class PixelError(ValueError):
    """Pixel values that cannot be shown; the message is written for the person who supplied them."""


def _depth_name(mode: str) -> str:
    return {"I": "32-bit integer", "F": "32-bit floating-point"}.get(mode, "16-bit")


def high_depth_to_gray(img: Image.Image, notes: list[str]) -> Image.Image:
    """A one-channel image of 16/32-bit integers or floats -> 8-bit L, scaled on its finite values."""
    arr = np.array(img, dtype=np.float32)  # a writable copy, worked on in place
    finite = np.isfinite(arr)
    n_bad = int(arr.size - np.count_nonzero(finite))
    if n_bad == arr.size:
        raise PixelError("Every pixel of the image is NaN or infinite: there is nothing to analyse.")
    if n_bad / arr.size > MAX_NONFINITE_SHARE:
        raise PixelError(f"{n_bad / arr.size:.0%} of the pixels are NaN or infinite (at most "
                         f"{MAX_NONFINITE_SHARE:.0%} can be masked). Export the image again without missing values.")
    if n_bad:
        arr[~finite] = np.nan
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    name = _depth_name(img.mode)
    if lo < 0 or hi > 65535:
        scale, offset = 255.0 / max(hi - lo, 1e-12), lo
        notes.append(f"{name} grayscale image converted to 8-bit: values from {lo:.4g} to {hi:.4g} stretched to 0-255.")
    else:
        scale, offset = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0)), 0.0
        notes.append(f"{name} grayscale image converted to 8-bit.")
    if n_bad:
        arr[~finite] = offset  # black once scaled
        notes.append(f"{n_bad:,} pixels ({n_bad / arr.size:.1%}) were NaN or infinite: they are shown black and the "
                     "rest was scaled on the finite values.")
    arr -= offset
    arr *= scale
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(np.rint(arr, out=arr).astype(np.uint8), "L")


def to_8bit(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any decoded mode -> L or RGB (8 bits per channel), with a note for each conversion."""
    mode = img.mode
    if mode in HIGH_DEPTH_MODES:
        return high_depth_to_gray(img, notes)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("Transparency was flattened onto white.")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB.")
    if mode in ("L", "RGB"):
        return img
    return img.convert("L") if mode == "1" else img.convert("RGB")


def as_rgb_array(img: Image.Image) -> np.ndarray:
    """An L or RGB image -> HxWx3 uint8 (gray repeated into the three channels)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when the pixels carry no colour (R, G and B within GRAY_TOLERANCE of each other almost
    everywhere), whatever the file's mode: 8/16-bit gray, gray palettes, RGB files of gray pixels.
    Large images are judged on an evenly spaced sample of about a million pixels."""
    h, w = rgb.shape[:2]
    step = max(1, int((h * w / 1_000_000) ** 0.5))
    # channel planes: OpenCV's max/min on them run 3x numpy's on strided views
    r, g, b = cv2.split(np.ascontiguousarray(rgb[::step, ::step]))
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    return np.count_nonzero(spread > GRAY_TOLERANCE) <= GRAY_SHARE * spread.size
