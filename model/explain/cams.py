"""Class activation maps and feature maps from one forward pass, without hooks.

timm's `forward_intermediates` returns every stage's output as part of the graph that produces
the logits, so one forward pass yields the prediction, the feature maps of every stage and,
after one `autograd.grad` call, the gradients a CAM needs. Nothing is registered on the shared
model, so concurrent sessions can never see each other's activations. The formulas follow
pytorch-grad-cam (the tests check ours against it); `library_cams` runs that library itself for
its extra methods, on a private copy of the model so its hooks never touch the shared one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from model.nets.classifier import feature_layers
from model.labels import CAM_METHOD_NAMES
from model.data.preprocess import resize_map

CAM_METHODS = dict(CAM_METHOD_NAMES)
LIBRARY_METHODS = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "eigengradcam": "EigenGradCAM"}


@dataclass
class ForwardResult:
    logits: np.ndarray                    # (K,)
    features: np.ndarray                  # pre-logits vector (D,)
    cams: dict[str, np.ndarray]           # method -> raw (h, w) map at the layer's resolution, >= 0
    cam_class: int
    cam_layer: int
    feature_maps: np.ndarray | None       # (k, h, w) most active channels of the chosen layer
    feature_channels: list[int]
    feature_means: list[float]
    last_stage: np.ndarray | None = None  # (C, h, w) the last stage's map, when the pass computed it


def method_cam(method: str, a: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """One CAM from activations a and gradients g, both (C, h, w); returns (h, w) before ReLU."""
    if method == "eigencam":
        # the projection on the first right singular vector, flat @ vh[0], from the eigenvectors of the
        # smaller of the two Gram matrices: the same numbers (to 1e-14) at a fraction of an SVD's cost
        # (an SVD here took 50-130 ms on 2 busy cores; numpy's eigh, through OpenBLAS's threads, 30 ms)
        flat = a.reshape(a.shape[0], -1).T.double().cpu()                  # (hw, C)
        flat = flat - flat.mean(dim=0)
        if flat.shape[0] <= flat.shape[1]:
            w, u = torch.linalg.eigh(flat @ flat.T)
            proj = u[:, -1] * w[-1].clamp(min=0).sqrt()
        else:
            proj = flat @ torch.linalg.eigh(flat.T @ flat)[1][:, -1]
        proj = proj.reshape(a.shape[1:]).float().to(a.device)
        # an SVD component's sign is arbitrary: orient it to agree with the mean activation
        if torch.sum((proj - proj.mean()) * (a.mean(0) - a.mean())) < 0:
            proj = -proj
        return proj
    assert g is not None
    if method == "gradcam":
        return (g.mean(dim=(1, 2))[:, None, None] * a).sum(0)
    if method == "hirescam":
        return (g * a).sum(0)
    if method == "xgradcam":
        w = (g * a).sum(dim=(1, 2)) / (a.sum(dim=(1, 2)) + 1e-7)
        return (w[:, None, None] * a).sum(0)
    if method == "layercam":
        return (torch.relu(g) * a).sum(0)
    if method == "gradcam++":
        # pytorch-grad-cam's formula, in float64: where activations can be negative (block outputs
        # without an activation) the denominator has a pole, and in float32 a gradient next to it
        # once gave a non-finite heatmap (blocks.0, ISIC_0031883); a zero denominator gives weight 0
        gd, ad = g.double(), a.double()
        g2 = gd ** 2
        den = 2 * g2 + ad.sum(dim=(1, 2), keepdim=True) * g2 * gd + 1e-6
        aij = torch.where((gd != 0) & (den != 0), g2 / torch.where(den != 0, den, 1.0), 0.0)
        w = (torch.relu(gd) * aij).sum(dim=(1, 2))
        peak = w.abs().max()
        if 0 < peak < float("inf"):
            w = w / peak    # a CAM is shown min-max scaled, so its scale is free: this keeps float32 finite
        return (w[:, None, None] * ad).sum(0).to(a.dtype)
    raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")


def scale_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU then min-max to [0, 1] (as pytorch-grad-cam's scale_cam_image)."""
    cam = np.maximum(np.asarray(cam, np.float32), 0)
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


def cam_at(cam, size_hw) -> np.ndarray:
    """A raw CAM as every view shows it: ReLU and min-max scaled, resized (bilinear) to size_hw
    (h, w), clipped to [0, 1]. `cam`: an (h, w) array or tensor."""
    if isinstance(cam, torch.Tensor):
        cam = cam.detach().cpu().numpy()
    return np.clip(resize_map(scale_cam(cam), size_hw), 0, 1)


def forward_explain(model: torch.nn.Module, x: torch.Tensor, cam_class: int | None = None,
                    cam_layer: int = -1, methods=("gradcam",), feature_layer: int | None = None,
                    n_feature_maps: int = 16) -> ForwardResult:
    """Logits, pre-logit features, CAMs for `cam_class` (default: top class) at `cam_layer`,
    and the most active feature maps of `feature_layer` - all from one forward pass of x (1x3xHxW)."""
    n_layers = len(feature_layers(model))
    cam_layer = cam_layer % n_layers
    wanted = sorted({cam_layer} | ({feature_layer % n_layers} if feature_layer is not None else set()))
    with torch.enable_grad():
        final, inter = model.forward_intermediates(x, indices=wanted)
        by_layer = dict(zip(wanted, inter))
        feats = model.forward_head(final, pre_logits=True)
        logits = model.forward_head(final)
        cls = int(logits[0].argmax()) if cam_class is None else int(cam_class)
        act = by_layer[cam_layer]
        grads = None
        grad_methods = [m for m in methods if m != "eigencam"]
        if grad_methods:
            g = torch.autograd.grad(logits[0, cls], act, allow_unused=True)[0]
            grads = None if g is None else g[0].detach()
    a = act[0].detach().float()
    if grad_methods and grads is None:
        # Token models (ViT, Swin) return reshaped copies of their blocks' outputs, which the
        # logits do not depend on: take those CAMs from pytorch-grad-cam on a private copy.
        cams = library_cams(model, x, grad_methods, cls, cam_layer)
        cams = {m: cams[m] if m in cams else method_cam(m, a, None).cpu().numpy() for m in methods}
    else:
        cams = {m: method_cam(m, a, grads).cpu().numpy() for m in methods}
    fmaps, channels, means = None, [], []
    if feature_layer is not None:
        f = by_layer[feature_layer % n_layers][0].detach().float()
        mean_act = f.mean(dim=(1, 2))
        order = torch.argsort(mean_act, descending=True)[:n_feature_maps]
        fmaps = f[order].cpu().numpy()
        channels = order.tolist()
        means = mean_act[order].tolist()
    return ForwardResult(logits[0].detach().float().cpu().numpy(), feats[0].detach().float().cpu().numpy(),
                         cams, cls, cam_layer, fmaps, channels, means,
                         a.cpu().numpy() if cam_layer == n_layers - 1 else None)


def _to_nchw(model: torch.nn.Module, input_hw):
    """pytorch-grad-cam reshape transform: token (B, L, C) or NHWC outputs -> NCHW maps; CNNs: None."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return None
    grid = (input_hw[0] // patch[0], input_hw[1] // patch[1])
    n_prefix = int(getattr(model, "num_prefix_tokens", 0))

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 3:
            t = t[:, n_prefix:, :]
            return t.reshape(t.shape[0], int(grid[0]), int(grid[1]), t.shape[2]).permute(0, 3, 1, 2)
        return t.permute(0, 3, 1, 2) if t.ndim == 4 and t.shape[1] != t.shape[3] and t.shape[1] < t.shape[3] else t
    return reshape


def _library_target(model: torch.nn.Module, cam_layer: int) -> torch.nn.Module:
    """The module whose output pytorch-grad-cam hooks for layer `cam_layer`.

    A class-token ViT's head reads only the class token after the last block, so the gradient of
    the logits with respect to that block's patch tokens is zero and every gradient CAM would be
    blank; as pytorch-grad-cam advises, the last block's first norm (its attention input) is used.
    """
    names = feature_layers(model)
    idx = cam_layer % len(names)
    block = model.get_submodule(names[idx])
    if (idx == len(names) - 1 and getattr(model, "global_pool", None) == "token"
            and isinstance(getattr(block, "norm1", None), torch.nn.Module)):
        return block.norm1
    return block


def library_cams(model: torch.nn.Module, x: torch.Tensor, methods, cam_class: int,
                 cam_layer: int = -1) -> dict[str, np.ndarray]:
    """CAMs computed by pytorch-grad-cam itself (scaled to [0, 1], input resolution), one per method.

    The library registers hooks on the model it is given, so it gets one private deep copy per
    call, shared by the methods: the shared model is never hooked and concurrent sessions stay apart.
    """
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
               "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM,
               "scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM, "eigengradcam": pgc.EigenGradCAM}
    if not methods:
        return {}
    private = copy.deepcopy(model)
    layer = _library_target(private, cam_layer)
    reshape = _to_nchw(private, x.shape[2:])
    out = {}
    for method in methods:
        with classes[method](model=private, target_layers=[layer], reshape_transform=reshape) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 16
            out[method] = cam(input_tensor=x, targets=[ClassifierOutputTarget(cam_class)])[0]
    return out
