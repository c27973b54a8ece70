"""Issue 16's second round of rewrites give what the plain formulas give: conformal sets scored in
one pass (all coverages, many images), Mahalanobis distances without numpy's threaded BLAS, and the
attention shares from OpenCV's double-precision sums."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from model.bundle import load_bundle
from model.conformal import _scores, all_sets, conformal_config, coverages_of, sets_many
from model.measure import attention_on_lesion, attention_shares
from model.quality import mahalanobis

REPO = Path(__file__).resolve().parents[1]


def _plain_sets(p, cfg, classes):
    order = np.argsort(-p, kind="stable")
    s = _scores(p[None], cfg)[0]
    out = {}
    for cov in coverages_of(cfg):
        t = cfg["thresholds"][str(cov)]
        thr = [math.inf if t[c] is None else float(t[c]) for c in classes]
        out[cov] = [classes[i] for i in order if s[i] <= thr[i] + 1e-12]
    return out


def test_sets_in_one_pass_are_the_sets_one_by_one():
    meta = load_bundle(REPO / "assets" / "models" / "classifier").meta
    cfg, classes = conformal_config(meta), meta["classes"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(classes), 0.4), size=300)
    probs[0] = 1 / len(classes)                        # all tied
    probs[1, :3] = probs[1, 2]                         # some tied
    got = sets_many(probs, cfg, classes)
    assert got == [_plain_sets(p, cfg, classes) for p in probs]
    assert all_sets(probs[5], cfg, classes) == got[5]
    assert any(len(s[90]) > 1 for s in got) and any(len(s[80]) == 1 for s in got)   # the test can fail


def test_mahalanobis_is_the_plain_formula():
    rng = np.random.default_rng(1)
    for dims in (6, 1280):
        a = rng.normal(size=(dims, dims))
        precision, mean = a @ a.T / dims + np.eye(dims), rng.normal(size=dims)
        for rows in (1, 3, 32):
            f = (mean + rng.normal(size=(rows, dims))).astype(np.float32)
            d = f.astype(np.float64) - mean
            want = np.sqrt(np.einsum("nj,jk,nk->n", d, precision, d))
            assert np.allclose(mahalanobis(f, mean, precision), want, rtol=1e-12), (dims, rows)


def test_attention_shares_are_the_float64_sums():
    rng = np.random.default_rng(2)
    mask = np.zeros((450, 600), bool)
    cv2.ellipse(mask.view(np.uint8), (300, 220), (160, 110), 20, 0, 360, 1, -1)
    heats = {"a": cv2.resize(rng.random((5, 7)).astype(np.float32), (600, 450)),
             "b": np.zeros((450, 600), np.float32), "c": rng.normal(size=(450, 600)).astype(np.float32)}
    got = attention_shares(heats, mask)
    for k, h in heats.items():
        heat = np.maximum(h.astype(np.float64), 0)
        want = None if heat.sum() <= 0 else heat[mask].sum() / heat.sum()
        assert (got[k] is None) == (want is None) and (want is None or abs(got[k] - want) < 1e-9), k
        assert attention_on_lesion(h, mask) == got[k]
    assert attention_shares(heats, None) == {k: None for k in heats}
    assert attention_on_lesion(heats["a"], np.zeros_like(mask)) is None
