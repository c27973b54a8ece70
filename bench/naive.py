"""A naive reference pipeline, written the way tutorials do it, computing the same outputs as
`model.inference.pipeline.Analyzer.analyze` so the benchmark can compare speed *and* check agreement.

What makes it naive (each is a common tutorial pattern):
  * both bundles are reloaded from disk on every request;
  * the prediction, each flipped TTA view, each CAM method, the feature maps and the lesion
    mask each get their own forward pass, one image at a time;
  * every CAM uses a pytorch-grad-cam object (GradCAM, GradCAMPlusPlus, ...) built for that call,
    which hooks the model, runs its own forward and backward pass and is then released.

It reuses the project's decoding/resizing/normalisation so that its inputs are bit-identical to
the fast pipeline's: the comparison then measures the pipeline structure, not preprocessing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model.nets import tv_compat  # noqa: F401  (before pytorch_grad_cam imports torchvision)
from model.nets.bundle import load_bundle
from model.inference.measurements import measure_lesion
from model.inference.working import MAX_WORKING_SIDE
from model.data.preprocess import decode_image, normalize, resize_map, resize_rgb, to_uint8_batch
from model.nets.segmenter import postprocess_mask


def _cam_classes() -> dict:
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM,
            "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM}


@dataclass
class NaiveResult:
    image: np.ndarray
    probabilities: np.ndarray
    cam_class: int
    cams: dict[str, np.ndarray]                  # method -> (H, W) in [0, 1] at image resolution
    feature_channels: list[int]
    feature_maps: np.ndarray | None              # (k, h, w) each min-max scaled
    lesion_mask: np.ndarray | None
    measurements: object | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # pytorch-grad-cam's EigenCAM input (the target layer's activations, C x h x w), kept so the
    # benchmark can tell an SVD sign flip apart from a real disagreement
    eigencam_activations: np.ndarray | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_analyze(models_dir: str | Path, source, cam_methods: Sequence[str] = ("gradcam",), tta: bool = False,
                  feature_layer: int | None = None, n_feature_maps: int = 16, segment: bool = True,
                  device: str = "cpu") -> NaiveResult:
    """Analyse one image the naive way. `feature_layer` indexes the classifier's feature_info."""
    import pytorch_grad_cam  # noqa: F401  (import cost is paid once per process, as in a tutorial app)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    dev = torch.device(device)
    models_dir = Path(models_dir)
    t: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        _sync(dev)
        now = time.perf_counter()
        t[name] = round((now - clock) * 1000, 2)
        clock = now

    # 1. reload the models for this request
    clf = load_bundle(models_dir / "classifier", dev)
    seg = load_bundle(models_dir / "segmenter", dev) if segment and (models_dir / "segmenter" / "meta.json").is_file() else None
    model = clf.model
    lap("load_models")

    # 2. decode and resize (same functions as the app, so the tensors are identical)
    rgb = decode_image(source)
    if max(rgb.shape[:2]) > MAX_WORKING_SIDE:
        s = max(rgb.shape[:2]) / MAX_WORKING_SIDE
        rgb = resize_rgb(rgb, tuple(round(v / s) for v in rgb.shape[:2]))
    x = normalize(to_uint8_batch([rgb], clf.input_size, clf.domain).to(dev), clf.mean, clf.std)
    lap("decode_resize")

    # 3. prediction: its own forward pass
    with torch.no_grad():
        logits = model(x).float()
    probs = torch.softmax(logits / clf.temperature, 1)[0].cpu().numpy()
    cam_class = int(logits[0].argmax())
    lap("classify")

    # 4. TTA: one more forward pass per flipped view
    if tta:
        views = [probs]
        for dims in ((3,), (2,), (2, 3)):
            with torch.no_grad():
                v = model(x.flip(dims)).float()
            views.append(torch.softmax(v / clf.temperature, 1)[0].cpu().numpy())
        probs = np.mean(views, axis=0)
        lap("tta")

    # 5. each CAM method: a fresh pytorch-grad-cam object, its own forward (and backward) pass
    target_layer = model.get_submodule(model.feature_info[-1]["module"])
    classes = _cam_classes()
    cams: dict[str, np.ndarray] = {}
    eig_act = None
    for method in cam_methods:
        with classes[method](model=model, target_layers=[target_layer]) as cam:
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(cam_class)])[0]
            if method == "eigencam":
                eig_act = cam.activations_and_grads.activations[0][0].float().numpy().copy()
        cams[method] = np.clip(resize_map(out, rgb.shape[:2]), 0, 1)
        lap(f"cam:{method}")
    model.zero_grad(set_to_none=True)

    # 6. feature maps: a forward hook on the chosen layer and another forward pass
    fmaps, channels = None, []
    if feature_layer is not None:
        module = model.get_submodule(model.feature_info[feature_layer]["module"])
        store = {}
        handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        f = store["a"][0].float()
        order = torch.argsort(f.mean(dim=(1, 2)), descending=True)[:n_feature_maps]
        channels = order.tolist()
        maps = []
        for c in order:
            m = np.maximum(f[c].cpu().numpy(), 0)
            m = m - m.min()
            maps.append(m / (1e-7 + m.max()))
        fmaps = np.stack(maps) if maps else np.zeros((0, 1, 1), np.float32)
        lap("feature_maps")

    # 7. segmentation: a separate pass of the segmenter, then the same clean-up and measurements
    mask = measures = None
    if seg is not None:
        xs = normalize(to_uint8_batch([rgb], seg.input_size, seg.domain).to(dev), seg.mean, seg.std)
        with torch.no_grad():
            prob = torch.sigmoid(seg.model(xs).float())[0, 0].cpu().numpy()
        mask = postprocess_mask(resize_map(prob, rgb.shape[:2]), float(seg.meta.get("threshold", 0.5)))
        lap("segment")
        measures = measure_lesion(mask, rgb)
        lap("measure")
    return NaiveResult(rgb, probs.astype(np.float32), cam_class, cams, channels, fmaps, mask, measures, t, eig_act)


def eigencam_flipped(activations: np.ndarray, input_hw, size_hw) -> np.ndarray:
    """pytorch-grad-cam's EigenCAM with the opposite sign of its first singular vector (the sign
    of an SVD component is arbitrary and differs between LAPACK paths, e.g. float32 NumPy vs
    float64 torch), post-processed as the library and `naive_analyze` do: ReLU, min-max, resize to
    the input size, min-max, resize to the image."""
    import cv2
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    def minmax(a):
        a = a - a.min()
        return a / (1e-7 + a.max())

    proj = -get_2d_projection(np.asarray(activations, np.float32)[None])[0]  # the library's own SVD, negated
    proj = minmax(np.maximum(proj, 0)).astype(np.float32)
    proj = minmax(cv2.resize(proj, (int(input_hw[1]), int(input_hw[0]))))
    return np.clip(resize_map(proj, size_hw), 0, 1)
