"""The sha256 that ties a bundle's derived files (model.onnx, the similar-cases index, faithfulness
caches) to its weights. No torch: the similar-cases code imports it too."""
from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_FILE = "weights.safetensors"   # model.nets.bundle.WEIGHTS


def weights_sha256(bundle_dir: str | Path) -> str:
    """sha256 of the bundle's weights.safetensors, read 1 MB at a time."""
    h = hashlib.sha256()
    with open(Path(bundle_dir) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
