"""U-Net lesion segmenter (segmentation_models_pytorch, timm encoders) and mask clean-up."""
from __future__ import annotations

from model.nets import tv_compat  # noqa: F401  (must run before smp imports timm/torchvision)

import cv2
import numpy as np
import torch

DEFAULT_DECODER = (128, 64, 32, 16, 16)


def build_segmenter(encoder: str = "tu-mobilenetv3_small_100", decoder_channels=DEFAULT_DECODER,
                    pretrained: bool = False, pretrained_source: str = "package") -> torch.nn.Module:
    """A one-channel (lesion logit) U-Net; `tu-<name>` uses any timm backbone as encoder.

    `pretrained` initialises the encoder from the same ImageNet weights as the classifier
    (model.nets.pretrained: an installed package offline, or the Hub with pretrained_source="hub").
    """
    import segmentation_models_pytorch as smp

    from model.nets.pretrained import PretrainedUnavailable, imagenet_state_dict, load_backbone

    hub = pretrained and pretrained_source == "hub"
    state = None
    if pretrained and not hub:
        if not encoder.startswith("tu-"):
            raise PretrainedUnavailable(f"Offline ImageNet weights are wired for timm encoders ('tu-<arch>'), "
                                        f"not {encoder!r}.")
        state = imagenet_state_dict(encoder)  # fails before building when absent
    try:
        model = smp.Unet(encoder_name=encoder, encoder_weights="imagenet" if hub else None,
                         in_channels=3, classes=1, decoder_channels=tuple(decoder_channels),
                         encoder_depth=len(decoder_channels))
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        if not hub:
            raise
        raise PretrainedUnavailable(f"Could not fetch ImageNet weights for {encoder!r} from the Hugging Face Hub "
                                    f"({type(e).__name__}: {str(e)[:200]}).") from e
    if state is not None:
        load_backbone(model.encoder.model, state, head_prefixes=())
    return model


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
