"""model.explain.cam_forward: CAMs at the last stage from forward outputs alone equal pytorch-grad-cam on
the same layer, for every method, on a pooled-linear head (closed form) and on EfficientNet's
conv_head head (gradient through the head only)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.nets import tv_compat  # noqa: F401
from model.nets.bundle import load_bundle
from model.explain.cam_forward import LastStageCam
from model.nets.classifier import feature_layers
from model.explain.cams import CAM_METHODS, forward_explain, library_cams, scale_cam
from model.nets.onnx_export import export_wrapper, output_names
from model.data.preprocess import decode_with_size, normalize, to_uint8_batch

REPO = Path(__file__).resolve().parents[1]


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _forward_outputs(model, x, names):
    with torch.inference_mode():
        return {n: t.numpy() for n, t in zip(names, export_wrapper(type("B", (), {"task": "classify", "model": model})())(x))}


def _check(model, x, min_corr_library: float = 0.999):
    n = len(feature_layers(model))
    names = ["logits", "features"] + [f"stage{i}" for i in range(n)]
    cam = LastStageCam(model, tuple(x.shape[2:]))
    assert cam.supported
    ours = cam.explain(_forward_outputs(model, x, names), n - 1, None, tuple(CAM_METHODS))
    ref = forward_explain(model, x, None, n - 1, tuple(CAM_METHODS))     # full backward pass
    lib = library_cams(model, x, list(CAM_METHODS), ours.cam_class, n - 1)
    for m in CAM_METHODS:
        assert _corr(ours.cams[m], ref.cams[m]) >= 0.999, m
        mine = cv2.resize(scale_cam(ours.cams[m]), (x.shape[3], x.shape[2]))   # as the library resizes
        if lib[m].std() > 1e-6:
            assert _corr(mine, lib[m]) >= min_corr_library, m
    return cam


def test_pooled_linear_head_uses_the_closed_form():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7).eval()
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    cam = _check(model, x, 0.999)
    assert cam.closed_form


def test_shipped_efficientnet_head_on_a_real_image():
    b = load_bundle(REPO / "assets" / "models" / "classifier")
    rgb = decode_with_size((REPO / "assets" / "examples" / "ISIC_0025032.jpg").read_bytes(), [], max_side=1024)[0]
    x = normalize(to_uint8_batch([rgb], b.input_size), b.mean, b.std)
    cam = _check(b.model, x, 0.999)
    assert not cam.closed_form          # conv_head + bn2 sit between blocks.6 and the pooling
    assert output_names(b)[:2] == ["logits", "features"]


def test_an_unfollowable_head_is_not_supported():
    import timm

    model = timm.create_model("test_vit", num_classes=7, img_size=(64, 64)).eval()
    assert not LastStageCam(model, (64, 64)).supported
