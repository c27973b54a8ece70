"""What one analysis and a batch review share before and after the networks: the working image
(uploads decoded at a bounded size), the flipped test-time views, and the uncertainty signal."""
from __future__ import annotations

import numpy as np
import torch

from model.data.preprocess import ImageError, decode_with_size, resize_rgb

MAX_WORKING_SIDE = 1024          # larger uploads are analysed (and displayed) at this size
LOW_CONFIDENCE_PROB = 0.5        # top-class probability under this is flagged
HIGH_ENTROPY = 0.6               # normalised entropy over this is flagged


def entropy(p: np.ndarray) -> float:
    """Normalised entropy of a probability vector: 0 (one class) to 1 (all equal)."""
    p = np.clip(p, 1e-12, 1)
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def uncertainty_reasons(probs: np.ndarray, tta_agreement: float | None = None) -> list[str]:
    """Why an answer counts as low confidence (empty when it does not)."""
    top_p, h = float(probs.max()), entropy(probs)
    reasons = []
    if top_p < LOW_CONFIDENCE_PROB:
        reasons.append(f"top class probability {top_p:.0%} is under {LOW_CONFIDENCE_PROB:.0%}")
    if h > HIGH_ENTROPY:
        reasons.append(f"normalised entropy {h:.2f} is over {HIGH_ENTROPY}")
    if tta_agreement is not None and tta_agreement < 1:
        reasons.append(f"flipped views disagree on the top class ({tta_agreement:.0%} agree)")
    return reasons


def working_image(source, notes: list[str], say: bool = True) -> tuple[np.ndarray, tuple[int, int], float]:
    """(RGB uint8 at the working size, upright (h, w) as uploaded, uploaded / working length).

    Files are decoded with a size hint (JPEG at 1/2-1/8 scale, other formats box-reduced as soon
    as they are decoded), so a large upload is never held at full size beyond its own decoding;
    arrays are taken as they are. Both are then downscaled to MAX_WORKING_SIDE."""
    if isinstance(source, np.ndarray):
        rgb, original = source, source.shape[:2]
    else:
        rgb, original = decode_with_size(source, notes, max_side=MAX_WORKING_SIDE)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError("Expected an RGB uint8 image.")
    scale = max(original) / MAX_WORKING_SIDE
    if scale <= 1:
        return rgb, tuple(original), 1.0
    h, w = (max(1, round(s / scale)) for s in original)
    if say:
        notes.append(f"Analysed at {w}x{h} (downscaled by {scale:.2f}).")
    return resize_rgb(rgb, (h, w)), tuple(original), scale


def flip_views(x: torch.Tensor) -> torch.Tensor:
    """The three flipped copies of an Nx3xHxW batch (TTA views besides the original), stacked
    view by view: rows [0, N) are the horizontal flips, then vertical, then both."""
    return torch.cat([x.flip(3), x.flip(2), x.flip(2, 3)])
