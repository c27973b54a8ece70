"""The lean path's rewrites give what the straightforward formulas give: dermoscopic colours and
their spread (OpenCV single pass vs numpy matmul), the heatmap overlay (one cv2.addWeighted vs
float blending), EigenCAM (Gram-matrix eigenvectors vs SVD)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from model.explain.cams import method_cam
from model.inference.colours import COLOUR_NAMES, RULES, lesion_lab
from model.inference.measurements import colour_variegation
from model.data.preprocess import decode_image

REPO = Path(__file__).resolve().parents[1]


def _reference_colours(rgb, mask):
    """The colour rule written out plainly: nearest reference (or the skin reference) per pixel, kept
    within its colour's distance, shares against the minimum shares."""
    pixels = rgb[mask].astype(np.float32)
    lab = lesion_lab(rgb, mask).astype(np.float64)
    refs = np.array([RULES.references[n] for n in COLOUR_NAMES] + [RULES.skin_reference], np.float64)
    d = np.sqrt(((lab[:, None, :] - refs[None]) ** 2).sum(-1))
    nearest = d.argmin(1)
    names = []
    for k, n in enumerate(COLOUR_NAMES):
        share = ((nearest == k) & (d[:, k] <= RULES.max_distance[n])).sum() / len(lab)
        if share >= RULES.min_share[n]:
            names.append(n)
    return names, float((pixels.astype(np.float64) / 255.0).std(axis=0).mean())


def test_colours_match_the_plain_formula_on_real_lesions():
    for name in ("ISIC_0025032", "ISIC_0027800", "ISIC_0031257"):
        rgb = decode_image((REPO / "assets" / "examples" / f"{name}.jpg").read_bytes())
        mask = cv2.imread(str(next((REPO / "assets" / "examples" / "masks").glob(f"{name}*"))), cv2.IMREAD_GRAYSCALE) > 127
        mask = cv2.resize(mask.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        names, spread = colour_variegation(rgb, mask)
        want_names, want_spread = _reference_colours(rgb, mask)
        assert names == want_names and abs(spread - want_spread) < 1e-6, name
    assert colour_variegation(rgb, np.zeros(mask.shape, bool)) == ([], 0.0)


def test_overlay_is_the_float_blend_within_rounding():
    from app.widgets.components import heatmap_overlay

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)
    heat = rng.random((45, 60)).astype(np.float32)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    want = 0.3 * rgb.astype(np.float64) + 0.7 * colour
    assert np.abs(heatmap_overlay(rgb, heat, 0.7).astype(np.float64) - want).max() <= 1.0


def test_eigencam_equals_the_svd_projection_up_to_sign():
    g = torch.Generator().manual_seed(0)
    for shape in [(320, 5, 7), (16, 40, 50)]:          # fewer positions than channels, and more
        a = torch.rand(*shape, generator=g)
        flat = a.reshape(shape[0], -1).T.double()
        flat = flat - flat.mean(0)
        want = (flat @ torch.linalg.svd(flat, full_matrices=False)[2][0]).reshape(shape[1:]).float()
        got = method_cam("eigencam", a, None)
        assert min(float((got - want).abs().max()), float((got + want).abs().max())) < 1e-5
