"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency
maps"; Quantus calls it MPRT): a heatmap that is evidence of what the model learned must change
when the learned weights are destroyed.

`cascade` copies the classifier and randomises it from the output back, one group at a time: the
head (everything after the last stage: 1x1 conv, norm, classifier), then each stage (for timm's
EfficientNets each `blocks.i`; for ResNets each `layerN`), then the stem. Randomising a group
replaces every parameter tensor with Gaussian noise of that tensor's own mean and standard
deviation (seeded), so activations keep their scale; norm layers' running statistics stay.

`image_correlations` explains one image's trained top class with the trained model and with every
randomised copy, for every method at every offered stage, and gives Spearman's rank correlation
between the trained map and each randomised map as the app shows them (ReLU, min-max scaled), at
the layer's own grid. A map with no positive value has no ranking: its correlation counts as 0.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from model.explain.cams import method_cam, scale_cam
from model.nets.classifier import feature_layers

DEPTHS_NOTE = ("depth k: the head and the last k-1 stages randomised (depth 1: the head only); "
               "each later depth adds the next stage towards the input, the last adds the stem")
FAIL_DEPTH = 3            # the head and the last two stages randomised
FAIL_CORRELATION = 0.5    # median above this at FAIL_DEPTH: "fails the randomisation check"
STAGE_CONTAINERS = ("blocks", "stages", "layers")


def stage_groups(model: torch.nn.Module) -> list[tuple[str, list[torch.nn.Module]]]:
    """[(name, modules)] from the output back to the input: "head", each stage, "stem"."""
    children = list(model.named_children())
    container = next((n for n, m in children if n in STAGE_CONTAINERS and isinstance(m, torch.nn.Sequential)), None)
    if container is not None:
        at = [n for n, _ in children].index(container)
        stages = [(f"{container}.{i}", [m]) for i, m in enumerate(getattr(model, container))]
    else:
        top = {l.split(".")[0] for l in feature_layers(model)}
        idx = [i for i, (n, m) in enumerate(children) if n in top and any(True for _ in m.parameters())]
        stages = [(children[i][0], [children[i][1]]) for i in idx]
        at = idx[0] if idx else 0
    last = at if container is not None else (idx[-1] if idx else at)
    has = lambda m: any(True for _ in m.parameters())  # noqa: E731
    head = [m for _, m in children[last + 1:] if has(m)]
    stem = [m for _, m in children[:at] if has(m)]
    return [("head", head)] + list(reversed(stages)) + ([("stem", stem)] if stem else [])


@torch.no_grad()
def randomise(modules: Sequence[torch.nn.Module], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for mod in modules:
        for p in mod.parameters():
            mean = float(p.mean())
            std = float(p.std()) if p.numel() > 1 else 0.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std + mean)


def cascade(model: torch.nn.Module, seed: int = 0) -> tuple[list[torch.nn.Module], list[str]]:
    """Copies of `model` (eval mode), the k-th with the first k groups of `stage_groups` randomised,
    and the name of the group each copy adds."""
    groups = stage_groups(model)
    out, names = [], []
    current = model
    for i, (name, _) in enumerate(groups):
        current = copy.deepcopy(current).eval()
        randomise(dict(stage_groups(current))[name], seed * 1000 + i)
        out.append(current)
        names.append(name)
    return out, names


def layer_maps(model: torch.nn.Module, x: torch.Tensor, cls: int, methods: Sequence[str],
               layers: Sequence[int]) -> dict[tuple[str, int], np.ndarray]:
    """{(method, layer index): map as shown (ReLU, min-max) at the layer's grid} for class `cls`."""
    layers = sorted(set(layers))
    with torch.enable_grad():
        final, acts = model.forward_intermediates(x, indices=layers)
        logit = model.forward_head(final)[0, cls]
        grads = list(torch.autograd.grad(logit, acts, allow_unused=True))
    return {(m, l): scale_cam(method_cam(m, a[0].detach().float(),
                                         None if g is None else g[0].detach().float()).cpu().numpy())
            for l, a, g in zip(layers, acts, grads) for m in methods}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either map is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def image_correlations(model: torch.nn.Module, randomised: Sequence[torch.nn.Module], x: torch.Tensor,
                       methods: Sequence[str]) -> tuple[dict[tuple[str, str], list[float]], int]:
    """{(method, layer name): [correlation per depth]} for one image (1x3xHxW), and the class explained."""
    names = feature_layers(model)
    layers = list(range(len(names)))
    with torch.inference_mode():
        cls = int(model(x)[0].argmax())
    trained = layer_maps(model, x, cls, methods, layers)
    out: dict[tuple[str, str], list[float]] = {(m, names[l]): [] for m in methods for l in layers}
    for r in randomised:
        maps = layer_maps(r, x, cls, methods, layers)
        for (m, l), t in trained.items():
            out[(m, names[l])].append(round(spearman(t, maps[(m, l)]), 4))
    return out, cls


def sanity_summary(rows: Sequence[dict], depths: Sequence[str]) -> dict:
    """{method: {layer: [median correlation per depth]}} and {method: {layer: [q25 per depth], ...}}."""
    acc: dict[str, dict[str, list[list[float]]]] = {}
    for r in rows:
        acc.setdefault(r["method"], {}).setdefault(r["layer"], []).append(r["rho"])
    medians, spread = {}, {}
    for m, by_layer in acc.items():
        for l, rhos in by_layer.items():
            a = np.asarray(rhos, np.float64)
            medians.setdefault(m, {})[l] = [round(float(v), 4) for v in np.median(a, 0)]
            spread.setdefault(m, {})[l] = {"q25": [round(float(v), 4) for v in np.percentile(a, 25, 0)],
                                           "q75": [round(float(v), 4) for v in np.percentile(a, 75, 0)]}
    return {"medians": medians, "spread": spread}
