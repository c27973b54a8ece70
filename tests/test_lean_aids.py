"""Issue 16's second round of rewrites give what the plain formulas give: conformal sets scored in
one pass (all coverages, many images), Mahalanobis distances without numpy's threaded BLAS, and the
attention shares from OpenCV's double-precision sums."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from model.nets.bundle import load_bundle
from model.aids.conformal import _scores, all_sets, conformal_config, coverages_of, sets_many
from model.explain.attention import attention_on_lesion, attention_shares
from model.inference.quality import mahalanobis

REPO = Path(__file__).resolve().parents[1]


def _plain_sets(p, cfg, classes):
    order = np.argsort(-p, kind="stable")
    s = _scores(p[None], cfg)[0]
    out = {}
    for cov in coverages_of(cfg):
        t = cfg["thresholds"][str(cov)]
        thr = [math.inf if t[c] is None else float(t[c]) for c in classes]
        top = int(np.argmax(p))
        out[cov] = [classes[i] for i in order if s[i] <= thr[i] + 1e-12 or (cfg.get("always_top") and i == top)]
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


def _old_colorize(values, size_hw=None):   # the reference, one map at a time (jet, as every map shown)
    v = np.uint8(255 * np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0, 1))
    if size_hw is not None:
        v = cv2.resize(v, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def test_tiles_and_overlays_are_the_pixels_drawn_one_by_one():
    from app.widgets.components import colorize, feature_tiles, heatmap_overlay

    rng = np.random.default_rng(3)
    maps = rng.normal(0.5, 0.4, size=(16, 5, 7)).astype(np.float32)
    maps[2, 1, 1], maps[3, 0, 0], maps[4, 2, 2] = np.nan, np.inf, -np.inf
    tiles, captions = feature_tiles(maps, list(range(16)), [0.1] * 16)
    assert len(tiles) == 16 and captions[0] == "ch 0 · 0.10"
    for m, t in zip(maps, tiles):
        assert np.array_equal(t, _old_colorize(m, (86, 120)))
        assert np.array_equal(colorize(m, (40, 56)), _old_colorize(m, (40, 56)))
    assert feature_tiles(np.zeros((0, 5, 7)), [], []) == ([], [])
    rgb = rng.integers(0, 256, (45, 60, 3), np.uint8)
    heat = cv2.resize(maps[2], (60, 45))
    clean = np.clip(np.nan_to_num(heat), 0, 1)
    assert np.isnan(heat).any() and np.array_equal(heatmap_overlay(rgb, heat), heatmap_overlay(rgb, clean))


def _old_asymmetry(mask):
    from model.inference.measurements import _reflect

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    centre = pts.mean(0)
    evecs = np.linalg.eigh(np.cov((pts - centre).T))[1]
    return tuple(float(1 - np.logical_and(mask, _reflect(mask, centre, ax)).sum() / mask.sum())
                 for ax in (evecs[:, 1], evecs[:, 0]))


def test_asymmetry_from_moments_is_the_coordinate_covariance():
    from model.inference.measurements import asymmetry

    masks = []
    for p in sorted((REPO / "assets" / "examples" / "masks").glob("*")):
        masks.append(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127)
    rng = np.random.default_rng(4)
    for _ in range(20):
        m = np.zeros((450, 600), np.uint8)
        centre, axes = rng.integers(150, 300, 2), rng.integers(20, 140, 2)
        cv2.ellipse(m, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
        cv2.circle(m, tuple(int(v) for v in rng.integers(100, 400, 2)), int(rng.integers(5, 60)), 1, -1)
        masks.append(m > 0)
    assert len(masks) > 20
    for m in masks:
        assert asymmetry(m) == _old_asymmetry(m)
    tiny = np.zeros((5, 5), bool)
    tiny[1, 1] = tiny[2, 2] = True
    assert asymmetry(tiny) == (0.0, 0.0)
