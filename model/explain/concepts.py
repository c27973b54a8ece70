"""Concept probes: one logistic regression per 7-point criterion on the classifier's pooled features
(in the spirit of concept activation vectors, Kim et al., ICML 2018), and where each is seen.

The pooled features are the global average of the head's last map T (for EfficientNet, the last
stage through conv_head and bn2), so a linear probe decomposes exactly over positions:

    w . mean_ij T[:, i, j] + b  =  mean_ij (w . T[:, i, j] + b)

The map w . T[:, i, j] + b is the concept map ("where the criterion is seen"): its mean is the
probe's logit for the image, as a pooled-linear head's CAM is to its logit.

Stored in the bundle as `concepts.safetensors` (weight K x D, bias K; float32), tied to the
weights' sha256 in the file's metadata, as model.onnx is. Refit with
`python -m model.cli.concepts BUNDLE --data DERM7PT`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from model.data.checklist import NAMES
from model.files import atomic_write
from model.nets.bundle import BundleError
from model.nets.weights_hash import weights_sha256

PROBES_FILE = "concepts.safetensors"
REFIT = "python -m model.cli.concepts {bundle} --data ../shared/data/derm7pt"
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)    # L2 strengths tried by cross-validation on `select`


class ConceptError(BundleError):
    """Concept probes that are missing or do not belong to the classifier; the message says what to run."""


@dataclass
class ConceptProbes:
    names: tuple[str, ...]
    weight: np.ndarray            # (K, D), on raw pooled features (standardisation folded in)
    bias: np.ndarray              # (K,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, K) probe logits for (N, D) pooled features."""
        return np.asarray(features, np.float32) @ self.weight.T + self.bias

    def presence(self, features: np.ndarray) -> np.ndarray:
        """(N, K) estimated probability that each criterion is present."""
        return 1.0 / (1.0 + np.exp(-self.logits(features)))

    def maps(self, head_map: np.ndarray) -> np.ndarray:
        """(K, h, w) probe logits at every position of the head's last (D, h, w) map."""
        m = np.asarray(head_map, np.float32)
        return np.einsum("kd,dhw->khw", self.weight, m) + self.bias[:, None, None]


# ----------------------------------------------------------------------------- fitting
def fit_logistic(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 200) -> tuple[np.ndarray, float]:
    """L2-regularised, class-balanced logistic regression (L-BFGS, float64) on standardised x:
    (w, b) minimising the balanced mean log-loss + lam/2 |w|^2."""
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    pos = float(yt.mean().clamp(1e-6, 1 - 1e-6))
    sample_w = torch.where(yt > 0, 0.5 / pos, 0.5 / (1 - pos))
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = xt @ w + b
        loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
        loss = loss + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k stratified folds of indices (positives and negatives dealt round-robin after a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in range(k)]
    for cls in (True, False):
        idx = rng.permutation(np.flatnonzero(np.asarray(y, bool) == cls))
        for j, i in enumerate(idx):
            out[j % k].append(i)
    return [np.sort(np.asarray(f, int)) for f in out]


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    return mean, x.std(0) + 1e-6


def cv_auroc(x: np.ndarray, y: np.ndarray, lam: float, k: int = 5, seed: int = 0) -> float:
    """Mean held-out AUROC over k stratified folds (standardised on each training part)."""
    from model.metrics import roc_auc

    scores = []
    for f in folds(y, k, seed):
        train = np.setdiff1d(np.arange(len(y)), f)
        mean, std = standardiser(x[train])
        w, b = fit_logistic((x[train] - mean) / std, y[train], lam)
        scores.append(roc_auc(y[f], ((x[f] - mean) / std) @ w + b))
    return float(np.nanmean(scores))


def fit_probe(x: np.ndarray, y: np.ndarray, lambdas: Sequence[float] = LAMBDAS, k: int = 5,
              seed: int = 0) -> tuple[np.ndarray, float, dict]:
    """One criterion's probe on raw features: the L2 strength with the best cross-validated AUROC,
    refit on all of x; returns (w, b, {lam: cv auroc}) with the standardisation folded into w, b."""
    cv = {lam: cv_auroc(x, y, lam, k, seed) for lam in lambdas}
    best = max(cv, key=lambda lam: (cv[lam], lam))
    mean, std = standardiser(x)
    w, b = fit_logistic((x - mean) / std, y, best)
    return w / std, b - float((w * mean / std).sum()), {"chosen_l2": best, "cv_auroc": {str(k_): round(v, 4) for k_, v in cv.items()}}


def fit_probes(x: np.ndarray, present: np.ndarray, progress=None) -> tuple[ConceptProbes, dict]:
    """Every criterion's probe: x (N, D) pooled features, present (N, K) booleans in NAMES order."""
    weights, biases, info = [], [], {}
    for j, name in enumerate(NAMES):
        if present[:, j].all() or not present[:, j].any():
            raise ValueError(f"Every select image is {'with' if present[:, j].all() else 'without'} the criterion "
                             f"{name}: its probe cannot be fitted. Point --data at Derm7pt (metadata.csv with the "
                             "criteria columns and a select part).")
        w, b, cv = fit_probe(x.astype(np.float64), present[:, j].astype(float))
        weights.append(w)
        biases.append(b)
        info[name] = cv
        if progress:
            progress(name, cv)
    return ConceptProbes(NAMES, np.asarray(weights, np.float32), np.asarray(biases, np.float32)), info


# ----------------------------------------------------------------------------- storage
def save_probes(bundle_dir: Path, probes: ConceptProbes) -> Path:
    """concepts.safetensors beside the weights, tied to their sha256."""
    path = Path(bundle_dir) / PROBES_FILE
    tensors = {"weight": torch.from_numpy(np.ascontiguousarray(probes.weight)),
               "bias": torch.from_numpy(np.ascontiguousarray(probes.bias))}
    meta = {"weights_sha256": weights_sha256(bundle_dir), "criteria": json.dumps(list(probes.names))}
    atomic_write(path, lambda p: save_file(tensors, p, metadata=meta))
    return path


def load_probes(bundle_dir: Path) -> ConceptProbes:
    """The bundle's probes; ConceptError (with the command to run) when absent, unreadable or fitted
    on other weights."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / PROBES_FILE
    refit = REFIT.format(bundle=bundle_dir)
    if not path.is_file():
        raise ConceptError(f"This classifier has no 7-point concept probes ({path.name} is missing). "
                           f"Fit them with `{refit}`.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weight, bias = f.get_tensor("weight").float().numpy(), f.get_tensor("bias").float().numpy()
        names = tuple(json.loads(meta.get("criteria", "[]")))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ConceptError(f"{path} is not a concept-probe file ({str(e)[:120]}). Refit with `{refit}`.") from None
    if meta.get("weights_sha256") != weights_sha256(bundle_dir):
        raise ConceptError(f"{path.name} was fitted on another classifier's weights (its sha256 does not match "
                           f"weights.safetensors): its criteria would be read from the wrong features. "
                           f"Refit with `{refit}`.")
    if names != NAMES or weight.shape[0] != len(NAMES) or bias.shape != (len(NAMES),):
        raise ConceptError(f"{path.name} holds {len(names)} probes ({', '.join(names)}), not the 7 criteria "
                           f"this code reads. Refit with `{refit}`.")
    return ConceptProbes(names, weight, bias)
