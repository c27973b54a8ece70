"""Batched forward passes shared by evaluation, prediction, training and the app pipeline."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from model.nets.bundle import Bundle
from model.nets.engine import engine_for
from model.data.preprocess import normalize, resize_map, to_uint8_batch


def pick_device(name: str = "auto") -> torch.device:
    """A torch device by name; "auto" is the GPU when there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def uses_channels_last(bundle: Bundle) -> bool:
    return model_device(bundle.model).type == "cuda"


def classifier_logits(bundle: Bundle, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Raw logits (before temperature) for RGB uint8 images of any size."""
    out = classifier_outputs(bundle, images, ["logits"], batch_size)["logits"]
    return out if len(images) else np.zeros((0, len(bundle.classes)), np.float32)


def classifier_outputs(bundle: Bundle, images: Sequence[np.ndarray], names: Sequence[str],
                       batch_size: int = 64) -> dict[str, np.ndarray]:
    """The engine's named outputs (`logits`, `features`, `stage{i}`) for RGB uint8 images of any size,
    through the one input path; an empty dict of empty lists for no images."""
    dev = model_device(bundle.model)
    outs: dict[str, list] = {n: [] for n in names}
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = normalize(to_uint8_batch(images[i:i + batch_size], bundle.input_size, bundle.domain).to(dev),
                          bundle.mean, bundle.std, uses_channels_last(bundle))
            for n, v in engine_for(bundle)(x, list(names)).items():
                outs[n].append(v)
    return {n: np.concatenate(v) if v else np.zeros(0, np.float32) for n, v in outs.items()}


def calibrated_probs(bundle: Bundle, logits: np.ndarray) -> np.ndarray:
    """Softmax of logits divided by the bundle's fitted temperature."""
    z = torch.as_tensor(logits, dtype=torch.float32) / bundle.temperature
    return torch.softmax(z, dim=1).numpy()


def segment_probs(bundle: Bundle, images: Sequence[np.ndarray], batch_size: int = 32,
                  out_sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Lesion probability maps, each resized back to its image's own size (or `out_sizes`)."""
    dev = model_device(bundle.model)
    maps: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            x = normalize(to_uint8_batch(chunk, bundle.input_size, bundle.domain).to(dev), bundle.mean, bundle.std,
                          uses_channels_last(bundle))
            probs = torch.sigmoid(torch.from_numpy(engine_for(bundle)(x, ["logits"])["logits"]))[:, 0].numpy()
            for j, (p, img) in enumerate(zip(probs, chunk)):
                size = out_sizes[i + j] if out_sizes is not None else img.shape[:2]
                maps.append(resize_map(p, size))
    return maps
