"""U-Net lesion segmenter (segmentation_models_pytorch, timm encoders) and mask clean-up."""
from __future__ import annotations

from . import tv_compat  # noqa: F401  (must run before smp imports timm/torchvision)

import cv2
import numpy as np
import torch

DEFAULT_DECODER = (128, 64, 32, 16, 16)


def build_segmenter(encoder: str = "tu-mobilenetv3_small_100", decoder_channels=DEFAULT_DECODER,
                    pretrained: bool = False) -> torch.nn.Module:
    """A one-channel (lesion logit) U-Net; `tu-<name>` uses any timm backbone as encoder."""
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name=encoder, encoder_weights="imagenet" if pretrained else None,
                    in_channels=3, classes=1, decoder_channels=tuple(decoder_channels),
                    encoder_depth=len(decoder_channels))


def postprocess_mask(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, keep the largest connected region, fill its holes. HxW float -> HxW bool."""
    binary = (np.asarray(prob) >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)
