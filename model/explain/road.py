"""Is a heatmap what the model used? ROAD faithfulness scores for CAMs (Rong et al., ICML 2022).

pytorch-grad-cam's `pytorch_grad_cam.metrics.road` removes the pixels a CAM ranks most relevant
(MoRF) or least relevant (LeRF) and fills them by noisy linear imputation from their neighbours
(so the removal leaves no tell-tale shape). We remove pixels exactly as its RemoveMostRelevantFirst /
RemoveLeastRelevantFirst do (`remove`; a test holds the two equal), without importing the library
at run time (its package pulls in matplotlib, which writes a font cache under HOME), and run all
perturbed copies of one image in one batched forward pass:

- `morf`: mean change of the explained class's calibrated probability when the most relevant
  10-90% of pixels are removed (more negative = the heat is where the evidence is);
- `lerf`: the same when the least relevant pixels are removed (near 0 = the cold parts did not matter);
- `road` = (lerf - morf) / 2, pytorch-grad-cam's `ROADCombined`: higher is more faithful.

    python -m model.cli.faithfulness BUNDLE --data DIR [--split test] [--limit N]

averages them (and the share of heat in the reference lesion mask) over a split per CAM method
and layer, into BUNDLE/meta.json `interpretability.faithfulness` (`model.explain.road_split`); the
model card shows it. The app computes them per image on request (`faithfulness`), never inside
the analysis itself.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from model.nets.bundle import Bundle
from model.nets.classifier import feature_layers
from model.explain.cams import method_cam, cam_at, forward_explain
from model.explain.road_imputer import FastImputer, MaskRecorder, add_noise, batched_fills
from model.data.preprocess import normalize, to_uint8_batch

PERCENTILES = (10, 30, 50, 70, 90)   # CAM percentile thresholds: 90% .. 10% of the pixels removed
SEED = 0
_RNG_LOCK = threading.Lock()         # the imputer draws its noise from torch's global generator


def remove(x: torch.Tensor, cam: torch.Tensor, percentile: float, most_relevant: bool, imputer) -> torch.Tensor:
    """x with the pixels above the CAM's `percentile` (MoRF; below it for LeRF, on 1 - cam) imputed:
    the pixels kept are those strictly under the percentile of the map ranked."""
    ranked = cam if most_relevant else 1 - cam
    threshold = np.percentile(ranked.cpu().numpy(), percentile)
    keep = torch.from_numpy(np.float32(ranked.cpu().numpy() < threshold))
    return imputer(x, keep)


def _perturbed_many(x: torch.Tensor, cams: list[np.ndarray], percentiles: Sequence[int]) -> torch.Tensor:
    """For each CAM: its MoRF copies (one per percentile), then its LeRF copies, of x (3xHxW), imputed
    as ROAD does and with the same noise draws as one FastImputer call per copy (the generator is
    reseeded per CAM). The noise-free solves run first, shared by equal masks and on two threads."""
    recorder = MaskRecorder()
    for cam in cams:
        cam_t = torch.from_numpy(np.ascontiguousarray(cam, np.float32))
        for most_relevant in (True, False):
            for p in percentiles:
                remove(x, cam_t, p, most_relevant, recorder)
    fills = batched_fills(x.numpy(), recorder.masks)
    per_cam = 2 * len(percentiles)
    out = []
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        for i, (indices, values) in enumerate(fills):
            if i % per_cam == 0:
                torch.manual_seed(SEED)
            out.append(add_noise(x, indices, values, FastImputer().noise))
    return torch.stack(out)


def _logits(model, batch: torch.Tensor) -> torch.Tensor:
    """Logits of a batch from a torch module, or from an engine (`model.nets.engine.Forward`)."""
    if isinstance(model, torch.nn.Module):
        device = next(model.parameters()).device
        with torch.inference_mode():
            return model(batch.to(device)).float().cpu()
    return torch.from_numpy(model(batch, ["logits"])["logits"]).float()


def road_many(model, x: torch.Tensor, cams: dict, cls: int, temperature: float = 1.0,
              percentiles: Sequence[int] = PERCENTILES) -> dict:
    """ROAD scores of several CAMs ({key: HxW in [0, 1] at x's size}) for class `cls` of one image
    x (1x3xHxW), with every perturbed copy in one batched forward pass. `model`: a torch module or
    an engine (the perturbed copies need no gradient)."""
    x = x.detach().float().cpu()
    keys = list(cams)
    batch = torch.cat([x, _perturbed_many(x[0], [cams[k] for k in keys], percentiles)])
    p = torch.softmax(_logits(model, batch) / temperature, 1)[:, cls].numpy()
    k = len(percentiles)
    out = {}
    for i, key in enumerate(keys):
        q = p[1 + 2 * k * i: 1 + 2 * k * (i + 1)]
        morf, lerf = float((q[:k] - p[0]).mean()), float((q[k:] - p[0]).mean())
        out[key] = {"road": round((lerf - morf) / 2, 4), "morf": round(morf, 4), "lerf": round(lerf, 4),
                    "probability": round(float(p[0]), 4)}
    return out


def road_scores(model, x: torch.Tensor, cam: np.ndarray, cls: int, temperature: float = 1.0,
                percentiles: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """ROAD scores of one CAM (HxW in [0, 1], at x's size) for class `cls` of one image x (1x3xHxW)."""
    return road_many(model, x, {0: cam}, cls, temperature, percentiles)[0]


def input_cams(bundle: Bundle, x: torch.Tensor, methods: Sequence[str], cam_class: int | None,
               layer: int) -> tuple[dict[str, np.ndarray], int]:
    """CAMs at the classifier's input size (scaled to [0, 1]) and the explained class index."""
    fwd = forward_explain(bundle.model, x, cam_class, layer, tuple(methods))
    size = tuple(bundle.input_size)
    return {m: cam_at(c, size) for m, c in fwd.cams.items()}, fwd.cam_class


def layer_cams(bundle: Bundle, x: torch.Tensor, methods: Sequence[str],
               layers: Sequence[int]) -> tuple[dict[tuple[str, int], np.ndarray], int]:
    """{(method, layer index): CAM at input size} for the top class at several layers, from one
    forward and one backward pass (the same maps `input_cams` gives layer by layer)."""
    model, size = bundle.model, tuple(bundle.input_size)
    layers = sorted(set(layers))
    with torch.enable_grad():
        final, acts = model.forward_intermediates(x, indices=layers)
        logits = model.forward_head(final)
        cls = int(logits[0].argmax())
        grads = [None] * len(layers)
        if any(m != "eigencam" for m in methods):
            grads = list(torch.autograd.grad(logits[0, cls], acts, allow_unused=True))
    if any(g is None for g in grads) and any(m != "eigencam" for m in methods):  # token models
        out = {}
        for l in layers:
            cams, cls = input_cams(bundle, x, methods, cls, l)
            out.update({(m, l): c for m, c in cams.items()})
        return out, cls
    out = {}
    for l, a, g in zip(layers, acts, grads):
        a, g = a[0].detach().float(), None if g is None else g[0].detach().float()
        for m in methods:
            out[(m, l)] = cam_at(method_cam(m, a, g), size)
    return out, cls


def faithfulness(bundle: Bundle, rgb: np.ndarray, methods: Sequence[str] = ("gradcam",),
                 cam_class: str | None = None, cam_layer: str | None = None,
                 percentiles: Sequence[int] = PERCENTILES) -> dict[str, dict[str, float]]:
    """ROAD scores per CAM method for one RGB uint8 image, as the app explains it (class: top by
    default; layer: the last stage by default). Thread-safe: nothing is registered on the model;
    the perturbed copies run through the bundle's shared engine."""
    from model.nets.engine import engine_for

    layers = feature_layers(bundle.model)
    layer = layers.index(cam_layer) if cam_layer else len(layers) - 1
    cls = bundle.classes.index(cam_class) if cam_class else None
    x = normalize(to_uint8_batch([rgb], bundle.input_size, bundle.domain), bundle.mean, bundle.std)
    x = x.to(next(bundle.model.parameters()).device)
    cams, cls_idx = input_cams(bundle, x, methods, cls, layer)
    return road_many(engine_for(bundle), x, cams, cls_idx, bundle.temperature, percentiles)
