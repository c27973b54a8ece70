"""Make `import torchvision` (and so timm / pytorch_grad_cam) work with a CPU-only torch.

Some environments pair a CPU build of torch with a CUDA build of torchvision (PyPI's
`torchvision==0.28.0` next to `torch==2.13.0+cpu`). torchvision's compiled ops then fail to
load, and its Python side aborts on import with "operator torchvision::nms does not exist"
because it registers fake kernels for `torchvision::nms` / `qnms`.

`ensure_torchvision_importable()` runs before torchvision is first imported. It loads the
compiled ops exactly as torchvision would; only if that fails does it declare the two op
schemas with `torch.library`, which is all the import needs. Where torchvision works, this
is a no-op. What stays unavailable in the fallback: torchvision's C++ ops (nms, roi_align...)
and `torchvision.io` decoding. This project decodes images with PIL and uses neither.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas
FALLBACK_ACTIVE = False


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> None:
    """Declare torchvision's op schemas if (and only if) its compiled ops cannot load."""
    global _LIBRARY, FALLBACK_ACTIVE
    if "torchvision" in sys.modules or _LIBRARY is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    for lib_path in Path(spec.origin).parent.glob("_C.*"):
        try:
            torch.ops.load_library(str(lib_path))
            return  # the real ops are there: nothing to do
        except (OSError, RuntimeError, ImportError):
            continue
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _LIBRARY.define(_SCHEMAS[name])
    FALLBACK_ACTIVE = True


ensure_torchvision_importable()
