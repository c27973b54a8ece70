"""One preprocessing module for training, evaluation and the app.

decode (PIL: EXIF orientation, modes, size guard) -> resize to the bundle's input size ->
normalise with the bundle's mean/std. (Training augmentations: model.training.augment.)
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from model.data.domain import to_training_domain
from model.data.pixels import PixelError, as_rgb_array, is_grayscale, to_8bit

ImageSource = Union[bytes, bytearray, str, Path, BinaryIO]

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "GIF"}
MAX_PIXELS = 50_000_000  # ~7000x7000; larger images are refused before decoding (decompression bombs)
MAX_BYTES = 200 * 1024 * 1024
PNG_TEXT_LIMIT_MB = PngImagePlugin.MAX_TEXT_CHUNK // 2**20  # Pillow refuses a larger PNG text chunk while decoding


class ImageError(ValueError):
    """An image that cannot be used; the message is written for the person who supplied it."""


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("The file is empty.")
        if len(source) > MAX_BYTES:
            raise ImageError(f"The file is larger than {MAX_BYTES // 2**20} MB.")
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No such file: {path}")
        if path.stat().st_size == 0:
            raise ImageError("The file is empty.")
        return Image.open(path)
    return Image.open(source)


def _size_hint(img: Image.Image, max_side: int | None) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale that still has a longer side >= max_side
    (DCT scaling: the full-size pixels are never held)."""
    w, h = img.size
    if max_side and img.format in ("JPEG", "MPO") and max(w, h) >= 2 * max_side:
        k = max_side / max(w, h)
        img.draft(None, (max(1, math.ceil(w * k)), max(1, math.ceil(h * k))))


def _reduce(img: Image.Image, max_side: int | None) -> Image.Image:
    """Box-reduce an 8-bit L/RGB image by an integer factor, keeping a longer side >= max_side."""
    factor = max(img.size) // max_side if max_side else 1
    return img.reduce(factor) if factor >= 2 else img


def decode_with_size(source: ImageSource, notes: list[str] | None = None, max_pixels: int = MAX_PIXELS,
                     max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """decode_image, and the upright size (height, width) of the image as uploaded.

    With `max_side`, an image larger than twice that is decoded at a reduced scale (JPEG DCT
    scaling, else an integer box reduction right after decoding) whose longer side is still at
    least `max_side`: memory then follows the working size, not the upload's pixel count.
    """
    wants_notes = notes is not None
    notes = notes if wants_notes else []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(source)
            if img.format not in ALLOWED_FORMATS:
                raise ImageError(f"Unsupported image format {img.format or 'unknown'}; "
                                 "use JPEG, PNG, BMP, TIFF or WebP.")
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"The image is {w}x{h} pixels, more than the {max_pixels:,} "
                                 "pixels accepted. Please downscale it first.")
            if getattr(img, "n_frames", 1) > 1:
                notes.append("Animated or multi-page file: only the first frame is used.")
                img.seek(0)
            _size_hint(img, max_side)
            img.load()
            stored = img.size
            ImageOps.exif_transpose(img, in_place=True)   # no copy when there is nothing to turn
            original = (w, h) if img.size == stored or stored[0] == stored[1] else (h, w)
            rgb = as_rgb_array(_reduce(to_8bit(img, notes), max_side))
    except ImageError:
        raise
    except PixelError as e:
        raise ImageError(str(e)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("The image declares an implausibly large size and was refused.") from None
    except UnidentifiedImageError:
        raise ImageError("This file is not an image that can be read (is it really a JPEG/PNG?).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "Decompressed data too large" in str(e):
            raise ImageError("The PNG carries a compressed text block (metadata) that expands to more than "
                             f"{PNG_TEXT_LIMIT_MB} MB: a decompression bomb, refused. Save the image again without "
                             "its metadata.") from None
        raise ImageError(f"The image could not be decoded; it may be truncated or corrupt ({e}).") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ImageError("The image has no usable pixels.")
    if wants_notes and is_grayscale(rgb):
        notes.append("Grayscale image: the model was trained on colour dermoscopy.")
    return rgb, (original[1], original[0])


def decode_image(source: ImageSource, notes: list[str] | None = None, max_pixels: int = MAX_PIXELS,
                 max_side: int | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, upright as its EXIF says.

    Raises ImageError with a plain message for anything unusable. Appends human-readable
    remarks about conversions to `notes` when given. `max_side`: see decode_with_size.
    """
    return decode_with_size(source, notes, max_pixels, max_side)[0]


def read_mask(source: ImageSource) -> np.ndarray:
    """Read a lesion mask as HxW bool (True = lesion). Palettes (also inverted ones) are applied."""
    img = _open(source)
    img.load()
    gray = np.asarray(img.convert("L"))
    return gray > 127


def resize_rgb(img: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Resize HxWx3 uint8 to (H, W); area interpolation when shrinking, linear when enlarging."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if img.shape[:2] == (h, w):
        return img
    shrink = img.shape[0] >= h and img.shape[1] >= w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    h, w = int(size_hw[0]), int(size_hw[1])
    if mask.shape[:2] == (h, w):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR) > 127


def resize_map(values: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Resize a float map (heatmap, probability) with bilinear interpolation."""
    return cv2.resize(np.asarray(values, np.float32), (int(size_hw[1]), int(size_hw[0])),
                      interpolation=cv2.INTER_LINEAR)


def model_rgb(rgb: np.ndarray, size_hw: Sequence[int], domain=None) -> np.ndarray:
    """The one input path: an RGB uint8 image of any size -> the training domain (model.data.domain,
    `domain` settings, None for the default) -> the network's input size."""
    return resize_rgb(to_training_domain(rgb, domain), size_hw)


# ----------------------------------------------------------------------------- tensors
def to_uint8_batch(images: Sequence[np.ndarray], size_hw: Sequence[int], domain=None):
    """Stack RGB uint8 images, through the one input path (`model_rgb`), as an Nx3xHxW uint8 tensor."""
    import torch

    arr = np.stack([model_rgb(im, size_hw, domain) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def normalize(x_uint8, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
    """uint8 Nx3xHxW tensor -> float tensor normalised with the model's mean/std (0..1 scale)."""
    import torch

    x = x_uint8.float().div_(255.0)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def normalize_hwc(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """One HxWx3 uint8 image -> 3xHxW float32, normalised exactly as `normalize` does (the same
    float32 operations in the same order, so the same bits), in numpy: no torch call per image."""
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32)
    x /= np.float32(255.0)
    x -= np.asarray(mean, np.float32)[:, None, None]
    x /= np.asarray(std, np.float32)[:, None, None]
    return x


def channel_stats(x_uint8) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (0..1 scale) of a uint8 Nx3xHxW tensor: normalisation from the data."""
    import torch

    mean = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    n = 0
    for chunk in x_uint8.split(512):
        c = chunk.double().div(255.0)
        mean += c.sum(dim=(0, 2, 3))
        sq += (c * c).sum(dim=(0, 2, 3))
        n += c.shape[0] * c.shape[2] * c.shape[3]
    mean /= n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]
