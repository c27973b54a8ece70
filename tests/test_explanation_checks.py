"""Issue 25: the checks on the explanations - seeded what-ifs (pixels pinned), ROAD baselines and
their paired intervals, the wording that follows them, the cascading randomisation on a tiny
model, the one command on the tiny bundles (resumable), and Analyzer.what_if."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from model.explain.baselines import (BASELINES, baseline_maps, centre_map, lesion_map, paired_differences,
                                     random_map, summarise)
from model.explain.confounders import WHAT_IFS, WhatIfError, what_if
from conftest import FULLRES
from model.explain.verdicts import BEATS, FAILS, baseline_verdicts, randomisation_failures

# sha256 (first 16 hex digits) of each what-if of `scene()` with seed 3: the drawings are seeded and
# must not drift (a changed drawing changes the stored stress test: rerun the command, then update)
PINNED = {
    "ruler": "c0e076e6405a195b",
    "ink": "c0bc5c05d051194e",
    "hair": "5fc01a10a03de431",
    "vignette": "6ba15f93709e1b90",
    "bubbles": "15bd97ef04ef2530",
    "lesion_only": "c9d663099a7c52b5",
    "surroundings_only": "d82e5979908760fc",
}


def scene():
    """A 60x80 textured 'skin' with a dark elliptical 'lesion', and its mask."""
    import cv2

    yy, xx = np.mgrid[0:60, 0:80]
    rgb = np.stack([200 + (xx % 7), 150 + (yy % 5) * 2, 140 + ((xx + yy) % 11)], -1).astype(np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    cv2.ellipse(mask, (40, 30), (18, 12), 15, 0, 360, 1, -1)
    rgb[mask > 0] = (90, 50, 40)
    return rgb, mask > 0


# ----------------------------------------------------------------------------- what-ifs
@pytest.mark.parametrize("name", WHAT_IFS)
def test_what_if_pixels_are_pinned(name):
    rgb, mask = scene()
    out = what_if(name, rgb, mask, seed=3)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out, rgb), "the what-if changed nothing"
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == PINNED[name]
    assert np.array_equal(out, what_if(name, rgb.copy(), mask, seed=3)), "not reproducible"
    assert np.array_equal(rgb, scene()[0]), "the input image was changed in place"


@pytest.mark.parametrize("name", ["ruler", "ink", "hair", "vignette", "bubbles"])
def test_artefacts_depend_on_the_seed(name):
    rgb, _ = scene()
    assert not np.array_equal(what_if(name, rgb, None, 0), what_if(name, rgb, None, 1))


def test_lesion_only_and_surroundings_only_keep_their_part():
    rgb, mask = scene()
    lesion = what_if("lesion_only", rgb, mask)
    assert np.array_equal(lesion[mask], rgb[mask])
    outside = lesion[~mask]
    assert (outside == outside[0]).all(), "the surroundings are one skin colour"
    assert np.abs(outside[0].astype(int) - np.median(rgb[~mask], 0)).max() < 15
    rest = what_if("surroundings_only", rgb, mask)
    assert rest[mask].mean() > rgb[mask].mean() + 60, "the dark lesion is filled from the lighter skin"
    assert np.array_equal(rest[:5], rgb[:5]), "pixels far from the lesion stay as they were"


def test_masked_what_ifs_need_a_lesion_and_names_are_checked():
    rgb, _ = scene()
    with pytest.raises(WhatIfError, match="no lesion"):
        what_if("lesion_only", rgb, np.zeros(rgb.shape[:2], bool))
    with pytest.raises(ValueError, match="unknown what-if"):
        what_if("sticker", rgb)


# ----------------------------------------------------------------------------- baselines
def test_baseline_maps():
    c = centre_map((30, 40))
    assert np.unravel_index(c.argmax(), c.shape) in {(14, 19), (14, 20), (15, 19), (15, 20)}
    assert c[0, 0] < 0.2 and c.max() <= 1
    r = random_map((30, 40), (3, 4), seed=5)
    assert np.array_equal(r, random_map((30, 40), (3, 4), seed=5)) and not np.array_equal(r, random_map((30, 40), (3, 4), 6))
    assert lesion_map(np.zeros((10, 10), bool), (30, 40)) is None
    m = np.zeros((30, 40), bool)
    m[10:20, 25:35] = True
    lm = lesion_map(m, (30, 40))
    assert lm[15, 30] == pytest.approx(1, abs=0.05) and lm[15, 2] < 0.05
    maps, fell_back = baseline_maps((30, 40), (3, 4), None, 0)
    assert fell_back and set(maps) == set(BASELINES) and np.array_equal(maps["lesion_mask"], maps["centre"])


def _rows(diff: float, n: int = 40, noise: float = 0.01):
    rng = np.random.default_rng(0)
    base = [{"image": f"i{i}", "baseline": b, "road": 0.1 + rng.normal(0, 0.05), "morf": 0, "lerf": 0}
            for i in range(n) for b in BASELINES]
    by = {(r["image"], r["baseline"]): r["road"] for r in base}
    meth = [{"image": f"i{i}", "method": "gradcam", "layer": "L", "road": by[(f"i{i}", "centre")] + diff
             + rng.normal(0, noise)} for i in range(n)]
    return meth, base


def test_paired_intervals_and_the_wording_that_follows_them():
    meth, base = _rows(0.0)
    for r in base:  # make the centre blob and the lesion mask equal, the random map far worse
        r["road"] = r["road"] - 0.3 if r["baseline"] == "random" else [b for b in base if b["image"] == r["image"]][0]["road"]
    for m in meth:
        m["road"] += 0.05
    rows = paired_differences(meth, base, n_boot=500)
    assert {r["baseline"] for r in rows} == set(BASELINES) and all(r["n"] == 40 for r in rows)
    by = {r["baseline"]: r for r in rows}
    assert by["random"]["ci"][0] > 0.3 and by["centre"]["ci"][0] > 0
    interp = {"faithfulness": {"versus_baselines": {"rows": rows}}}
    assert baseline_verdicts(interp)[("gradcam", "L")]["text"] == BEATS
    meth2 = [{**m, "road": m["road"] - 0.2} for m in meth]  # now every baseline but random beats it
    v = baseline_verdicts({"faithfulness": {"versus_baselines": {"rows": paired_differences(meth2, base, 500)}}})
    v = v[("gradcam", "L")]
    assert not v["beats"] and set(v["losing_to"]) == {"centre", "lesion_mask"}
    assert "baselines win" in v["text"] and BEATS not in v["text"]
    assert summarise(base)["centre"]["n"] == 40


def test_randomisation_failures_read_from_meta():
    assert randomisation_failures({"sanity": {"failing": [["eigencam", "blocks.0"]]}}) == {("eigencam", "blocks.0")}
    assert randomisation_failures({}) == set() and FAILS == "fails the randomisation check"


# ----------------------------------------------------------------------------- sanity on a tiny model
def test_cascade_randomises_from_the_head_down(tiny_classifier_dir):
    import torch

    from model.explain.sanity import cascade, image_correlations, stage_groups
    from model.nets.bundle import load_bundle

    model = load_bundle(tiny_classifier_dir).model
    names = [n for n, _ in stage_groups(model)]
    assert names[0] == "head" and names[-1] == "stem" and len(names) >= 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    models, depths = cascade(model, seed=0)
    assert depths == names and len(models) == len(names)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the trained model was changed"
    changed = [sum(not torch.equal(before[k], v) for k, v in m.named_parameters()) for m in models]
    varied = sum(p.numel() > 1 and float(p.std()) > 0 for p in model.parameters())  # a constant tensor holds no pattern
    assert changed == sorted(changed) and changed[0] > 0 and changed[-1] == varied
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    same, _ = image_correlations(model, [model], x, ["gradcam", "eigencam"])
    assert all(v == [1.0] or v == [0.0] for v in same.values()) and any(v == [1.0] for v in same.values())
    corr, _ = image_correlations(model, models, x, ["gradcam"])
    assert all(len(v) == len(models) and all(-1 <= r <= 1 for r in v) for v in corr.values())


# ----------------------------------------------------------------------------- the command
def test_command_records_all_three_and_resumes(tiny_models_dir, ham_small, tmp_path):
    from model.cli.explanation_checks import main
    from model.explain.road_split import read_cache

    bundle = tiny_models_dir / "classifier"
    cache = tmp_path / "checks.jsonl.gz"
    args = [str(bundle), "--data", str(ham_small), "--cache", str(cache), "--sanity-images", "3",
            "--faithfulness-cache", str(tmp_path / "none.jsonl")]
    assert main(args) == 0
    interp = json.loads((bundle / "meta.json").read_text())["interpretability"]
    base = interp["faithfulness"]["baselines"]
    assert set(base) == set(BASELINES) and all({"road", "n"} <= set(v) for v in base.values())
    stress = interp["stress_test"]
    for name in ("ruler", "ink", "hair", "vignette", "bubbles"):
        assert {"flip_rate", "delta_mel", "delta_mel_ci", "delta_bacc", "n"} <= set(stress[name])
    sanity = interp["sanity"]
    assert sanity["n"] == 3 and "seed" in sanity and sanity["command"].startswith("python -m model.cli.explanation_checks")
    assert set(sanity["gradcam"]) and all(len(v) == len(sanity["depths"]) for v in sanity["gradcam"].values())
    lines = cache.read_bytes()
    assert main(args) == 0
    assert cache.read_bytes() == lines, "a second run recomputed cached images"
    assert len({r["image"] for r in _all_rows(cache)}) >= 3


def _all_rows(path):
    import gzip

    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- the Analyzer
def test_analyzer_what_if_moves_the_probabilities(tiny_models_dir, ham_small):
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(tiny_models_dir)
    image = sorted((ham_small / "images").glob("*.jpg"))[0]
    a = analyzer.analyze(str(image))
    w = analyzer.what_if(a.image, "vignette", a.lesion_mask)
    assert w.image.shape == a.image.shape and w.cam.shape == a.image.shape[:2]
    assert np.isclose(w.probabilities.sum(), 1, atol=1e-4)
    assert not np.allclose(w.probabilities, a.probabilities, atol=1e-6)
    same = analyzer.what_if(a.image, "vignette", a.lesion_mask)
    assert np.array_equal(same.image, w.image) and np.allclose(same.probabilities, w.probabilities)


def test_kept_factorisations_give_the_same_imputation():
    import torch

    from model.explain.road_imputer import FastImputer, keep_factors

    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 30, 40, generator=g)
    mask = (torch.rand(30, 40, generator=g) > 0.4).float()
    def run():
        torch.manual_seed(1)
        return FastImputer()(img, mask)
    keep_factors(0)
    fresh = run()
    keep_factors(4)
    try:
        first, again = run(), run()
    finally:
        keep_factors(0)
    assert torch.equal(fresh, first) and torch.equal(fresh, again)


def test_faithfulness_run_keeps_the_baselines_of_the_same_weights(tiny_models_dir, ham_small, tmp_path):
    from model.cli.explanation_checks import main as checks
    from model.cli.faithfulness import main as faithfulness

    bundle = tiny_models_dir / "classifier"
    assert checks([str(bundle), "--data", str(ham_small), "--checks", "baselines", "--limit", "2",
                   "--cache", str(tmp_path / "c.jsonl")]) == 0
    assert faithfulness([str(bundle), "--data", str(ham_small), "--limit", "2", "--methods", "gradcam"]) == 0
    fig = json.loads((bundle / "meta.json").read_text())["interpretability"]["faithfulness"]
    assert set(fig["baselines"]) == set(BASELINES) and fig["versus_baselines"]["rows"] is not None


def test_what_if_bench_runs_on_the_tiny_bundles(tiny_models_dir, tmp_path):
    from bench.what_if import main

    out = tmp_path / "w.json"
    image = sorted((FULLRES / "images").glob("*.jpg"))[0]
    assert main(["--models", str(tiny_models_dir), "--threads", "1", "--repeats", "1", "--images", str(image),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())["what_if"]
    assert {"ruler", "ink", "hair", "vignette", "bubbles"} <= set(result)
    assert all(v["n"] == 1 and v["median_ms"] > 0 for v in result.values())
