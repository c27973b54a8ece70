"""TCAV (Kim et al., ICML 2018) for one class and the 7-point criteria, written out (captum is not installed).

Layer: the classifier's last stage. At the pooled features the melanoma logit is linear (a constant
gradient, the head's weight row), so every image's directional derivative has the same sign and a
TCAV score there can only be 0 or 1. At the last stage the head (1x1 conv, norm, activation,
pooling, linear) lies between the layer and the logit, so the gradient differs between images.

  CAV v        the unit normal of a logistic regression (model.explain.concepts.fit_logistic) that
               separates images with the criterion from images without it, on the last stage's
               spatially pooled activations (select images)
  S(x)         d logit_mel / d eps of  A(x) + eps v  at every position  =  sum_ij grad_ij(x) . v
  TCAV score   the share of the class's images (report) with S(x) > 0

Each criterion gets `runs` CAVs, each fitted on a random stratified subsample of the select
images; its random concepts are CAVs fitted on the same images with the labels shuffled (as many
positives, no concept). The two lists of TCAV scores are compared by a two-sided Welch t-test,
Bonferroni-corrected over the criteria.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

from model.explain.concepts import fit_logistic, standardiser

ALPHA = 0.05


def summed_head_gradients(model: torch.nn.Module, tail: Callable, stage_maps: np.ndarray, cls: int,
                          batch_size: int = 64) -> np.ndarray:
    """(N, C): d logit_cls / d A summed over positions, for last-stage maps A (N, C, h, w), through the
    head alone (the body's gradient is not needed: the CAV moves the last stage's activations)."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(stage_maps), batch_size):
        a = torch.as_tensor(stage_maps[i:i + batch_size], dtype=torch.float32, device=dev).requires_grad_(True)
        with torch.enable_grad():
            logit = model.forward_head(tail(a))[:, cls].sum()
            g = torch.autograd.grad(logit, a)[0]
        out.append(g.sum(dim=(2, 3)).detach().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, stage_maps.shape[1]), np.float32)


def cav(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    """A concept activation vector: the unit normal, in raw activation space, of a logistic regression
    separating y=1 from y=0 in x (N, C)."""
    mean, std = standardiser(x)
    w, _ = fit_logistic((x - mean) / std, y, lam)
    v = w / std
    return v / (np.linalg.norm(v) + 1e-12)


def tcav_score(grads: np.ndarray, v: np.ndarray) -> float:
    """Share of images whose directional derivative along v is positive."""
    return float(np.mean(grads @ v > 0)) if len(grads) else float("nan")


def subsample(y: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A stratified random subsample of indices."""
    keep = []
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        keep.append(rng.choice(idx, size=max(1, int(round(frac * len(idx)))), replace=False))
    return np.sort(np.concatenate(keep))


def criterion_test(x: np.ndarray, y: np.ndarray, grads: np.ndarray, runs: int, n_random: int,
                   rng: np.random.Generator, frac: float = 0.8) -> dict:
    """One criterion: TCAV scores of `runs` concept CAVs against `n_random` random-concept CAVs."""
    from scipy.stats import ttest_ind

    y = np.asarray(y, bool)
    concept = [tcav_score(grads, cav(x[i], y[i])) for i in (subsample(y, frac, rng) for _ in range(runs))]
    random = []
    for _ in range(n_random):
        i = subsample(y, frac, rng)
        random.append(tcav_score(grads, cav(x[i], rng.permutation(y[i]))))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # identical scores (all 1.0) lose precision; p stays valid
        t = ttest_ind(concept, random, equal_var=False)
    p = float(t.pvalue) if np.isfinite(t.pvalue) else 1.0
    return {"tcav": round(float(np.mean(concept)), 4), "tcav_sd": round(float(np.std(concept)), 4),
            "random_tcav": round(float(np.mean(random)), 4), "random_sd": round(float(np.std(random)), 4),
            "p": p}


def tcav_table(x: np.ndarray, present: np.ndarray, names, grads: np.ndarray, runs: int = 20,
               n_random: int = 20, seed: int = 0) -> dict:
    """Every criterion's test, Bonferroni-corrected: {name: {tcav, random_tcav, p, p_bonferroni, significant}}."""
    rng = np.random.default_rng(seed)
    out = {}
    for j, name in enumerate(names):
        r = criterion_test(x, present[:, j], grads, runs, n_random, rng)
        r["p_bonferroni"] = min(1.0, r["p"] * len(names))
        r["significant"] = bool(r["p_bonferroni"] < ALPHA)
        r["p"], r["p_bonferroni"] = float(f"{r['p']:.3g}"), float(f"{r['p_bonferroni']:.3g}")
        out[name] = r
    return out
