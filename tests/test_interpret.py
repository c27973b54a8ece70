"""CAMs: ours agree with pytorch-grad-cam on a CNN; on a class-token ViT (where the library is
used) every gradient method gives a real, class-dependent map and the shared model stays unhooked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.nets import tv_compat  # noqa: F401  (timm imports torchvision)
from model.explain.cams import CAM_METHODS, forward_explain, library_cams, scale_cam
from model.data.preprocess import resize_map

GRADIENT_METHODS = [m for m in CAM_METHODS if m != "eigencam"]


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, 64, 64, generator=g)


def test_our_cams_match_pytorch_grad_cam_on_a_cnn(image):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7).eval()
    ours = forward_explain(model, image, methods=tuple(GRADIENT_METHODS))
    theirs = library_cams(model, image, GRADIENT_METHODS, ours.cam_class)
    assert _hooks(model) == 0
    for m in GRADIENT_METHODS:
        mine = np.clip(resize_map(scale_cam(ours.cams[m]), image.shape[2:]), 0, 1)
        assert theirs[m].shape == mine.shape
        if theirs[m].std() < 1e-6:  # a flat map (possible for an untrained net): both must be flat
            assert mine.std() < 0.05, m
        else:
            assert _corr(mine, theirs[m]) > 0.95, m


def test_class_token_vit_cams_are_real_and_the_model_stays_unhooked(image):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=7, img_size=(64, 64)).eval()
    assert model.global_pool == "token"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = forward_explain(model, image, methods=tuple(CAM_METHODS))
    assert set(res.cams) == set(CAM_METHODS)
    for m, cam in res.cams.items():
        scaled = scale_cam(cam)
        assert np.isfinite(scaled).all(), m
        assert scaled.std() > 0.05, f"{m}: blank map (gradients of the last block's patch tokens are zero)"
    other = forward_explain(model, image, cam_class=(res.cam_class + 1) % 7, methods=("gradcam",))
    assert np.abs(scale_cam(other.cams["gradcam"]) - scale_cam(res.cams["gradcam"])).max() > 0.1
    assert _hooks(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _gradcam_pp_float32(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's Grad-CAM++ formula as the library computes it (float32 numpy)."""
    g2, g3 = g ** 2, g ** 3
    aij = g2 / (2 * g2 + a.sum(axis=(1, 2))[:, None, None] * g3 + np.float32(1e-6))
    aij = np.where(g != 0, aij, 0)
    w = (np.maximum(g, 0) * aij).sum(axis=(1, 2))
    return (w[:, None, None] * a).sum(0)


def test_gradcam_plus_plus_matches_the_library_formula_and_stays_finite_on_signed_activations():
    """Block outputs without an activation are signed, which puts a pole in Grad-CAM++'s
    denominator; ours (float64, weights rescaled) must give the library's scaled map wherever the
    library's is finite, and a finite map everywhere."""
    from model.explain.cams import method_cam

    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(300):
        c = int(rng.integers(4, 40))
        a = (rng.normal(0, 1, (c, 5, 7)) * 10 ** rng.uniform(-2, 2)).astype(np.float32)
        g = (rng.normal(0, 1, (c, 5, 7)) * 10 ** rng.uniform(-4, 1)).astype(np.float32)
        mine = method_cam("gradcam++", torch.from_numpy(a), torch.from_numpy(g)).numpy()
        assert np.isfinite(mine).all()
        with np.errstate(all="ignore"):
            theirs = _gradcam_pp_float32(a, g)
        if np.isfinite(theirs).all() and scale_cam(theirs).std() > 1e-3:
            # float32 next to a pole is itself imprecise: the library's map is matched, not its rounding
            assert _corr(scale_cam(mine), scale_cam(theirs)) > 0.999
            compared += 1
    assert compared > 250

    # a channel exactly on the pole in float32 (sums of powers of two, so every step is exact):
    # g = 2^-11 and S = -(2^12 + 1e-6 * 2^33) make 2 g^2 + S g^3 = -1e-6, a zero denominator
    a = rng.uniform(0, 1, (3, 5, 7)).astype(np.float32)
    g = rng.normal(0, 1e-3, (3, 5, 7)).astype(np.float32)
    a[0] = 0
    a[0, 2, 3] = -(4096 + np.float32(1e-6) * np.float32(2.0 ** 33))
    g[0] = np.float32(2.0 ** -11)
    with np.errstate(all="ignore"):
        assert not np.isfinite(_gradcam_pp_float32(a, g)).all()     # the library's formula breaks here
    mine = method_cam("gradcam++", torch.from_numpy(a), torch.from_numpy(g)).numpy()
    assert np.isfinite(mine).all() and np.isfinite(scale_cam(mine)).all()
