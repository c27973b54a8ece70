"""The one input path (model.data.domain): a full-resolution photograph reaches the networks as its
200x150 twin did, training images pass untouched, colour constancy is a bundle setting; and the
dermatoscope-shift augmentations behave."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.data.domain import (DEFAULT_DOMAIN, LEGACY_DOMAIN, capture_size, centre_crop, domain_of,
                               jpeg_round_trip, shades_of_gray, to_training_domain)
from model.data.preprocess import decode_image, model_rgb
from model.training.shift import SHIFT_FAMILIES, parse_shift, shift_batch

REPO = Path(__file__).resolve().parents[1]
FULLRES = REPO / "tests" / "data" / "fullres"
PAIRS = sorted((p, FULLRES / "twins" / p.name) for p in list((FULLRES / "images").glob("*.jpg"))
               + list((REPO / "assets" / "examples").glob("*.jpg")))


def test_every_full_resolution_test_image_has_its_twin():
    assert len(PAIRS) == 11 and all(t.is_file() for _, t in PAIRS)


@pytest.mark.parametrize("full,twin", PAIRS[:4], ids=lambda p: p.stem if isinstance(p, Path) else "")
def test_the_path_reproduces_the_training_images_pipeline(full, twin):
    """600x450 at JPEG quality 100 -> the path -> within a grey level of the 200x150 twin; a plain
    resize (the old path) is several times further away."""
    rgb, small = decode_image(full), decode_image(twin)
    ours = to_training_domain(rgb, DEFAULT_DOMAIN)
    assert ours.shape == small.shape == (150, 200, 3)
    err = np.abs(ours.astype(float) - small).mean()
    old = np.abs(np.asarray(Image.fromarray(rgb).resize((200, 150), Image.BILINEAR), float) - small).mean()
    assert err < 1.0 and old > 1.5 * err, (err, old)


def test_training_images_and_small_uploads_pass_untouched():
    small = decode_image(PAIRS[0][1])
    assert to_training_domain(small, DEFAULT_DOMAIN) is small
    tiny = small[:40, :60]
    assert to_training_domain(tiny, DEFAULT_DOMAIN) is tiny
    assert to_training_domain(small, None) is small


def test_capture_sizes_and_crops():
    assert capture_size((450, 600), (150, 200)) == (150, 200)
    assert capture_size((384, 384), (150, 200), "keep") == (173, 173)
    assert capture_size((384, 384), (150, 200), "stretch") == (150, 200)
    assert capture_size((150, 200), (150, 200)) is None
    square = np.zeros((300, 300, 3), np.uint8)
    assert centre_crop(square, (150, 200)).shape == (225, 300, 3)
    with pytest.raises(ValueError, match="aspect"):
        to_training_domain(np.zeros((600, 800, 3), np.uint8), {**DEFAULT_DOMAIN, "aspect": "fish"})


def test_jpeg_round_trip_is_lossy_and_stable():
    rgb = decode_image(PAIRS[0][0])[:120, :160]
    once = jpeg_round_trip(rgb, 75)
    assert once.shape == rgb.shape and np.abs(once.astype(int) - rgb).mean() > 0.5
    assert np.abs(jpeg_round_trip(once, 75).astype(int) - once).mean() < np.abs(once.astype(int) - rgb).mean()


def test_shades_of_gray_neutralises_a_cast_and_leaves_gray_alone():
    rgb = decode_image(PAIRS[1][1]).astype(float)
    cast = np.clip(rgb * [1.25, 1.0, 0.8], 0, 255).astype(np.uint8)
    fixed = shades_of_gray(cast, 6).astype(float)
    means = fixed.reshape(-1, 3).mean(0)
    assert np.ptp(means) < np.ptp(cast.reshape(-1, 3).mean(0))
    gray = np.full((40, 40, 3), 120, np.uint8)
    assert np.abs(shades_of_gray(gray).astype(int) - 120).max() <= 1
    cc = {**DEFAULT_DOMAIN, "colour_constancy": {"method": "shades_of_gray", "p": 6}}
    assert not np.array_equal(to_training_domain(cast, cc), cast)


def test_bundles_record_their_path_and_old_bundles_keep_theirs():
    assert domain_of({})["capture_size"] is None                      # before the one input path
    assert domain_of({"preprocessing": DEFAULT_DOMAIN}) == DEFAULT_DOMAIN
    assert domain_of({"preprocessing": {"capture_size": [150, 200], "jpeg_quality": 75}})["aspect"] == "stretch"
    meta = __import__("json").loads((REPO / "assets" / "models" / "classifier" / "meta.json").read_text())
    assert domain_of(meta)["capture_size"] == [150, 200] and domain_of(meta)["jpeg_quality"] == 75


def test_model_rgb_is_the_one_path_to_the_network_input():
    rgb = decode_image(PAIRS[0][0])
    via = model_rgb(rgb, (128, 160), DEFAULT_DOMAIN)
    assert via.shape == (128, 160, 3)
    direct = model_rgb(to_training_domain(rgb, DEFAULT_DOMAIN), (128, 160), None)
    assert np.array_equal(via, direct)


def test_a_full_resolution_upload_gets_its_twins_answer():
    """The shipped classifier through the app's batch path: each full-resolution photograph and its
    200x150 twin get the same top class; through the old resize-only path the first bundled example
    (ISIC_0026468) did not."""
    from model.inference.pipeline import Analyzer
    from model.nets.bundle import load_bundle

    clf = load_bundle(REPO / "assets" / "models" / "classifier")
    assert clf.domain["capture_size"]
    analyzer = Analyzer(clf)
    full = analyzer.classify_many([(p.name, p.read_bytes()) for p, _ in PAIRS])
    twin = analyzer.classify_many([(t.name, t.read_bytes()) for _, t in PAIRS])
    assert [a.top_class for a in full] == [b.top_class for b in twin]
    assert max(float(np.abs(a.probabilities - b.probabilities).max()) for a, b in zip(full, twin)) < 0.2
    old = Analyzer(dataclasses.replace(clf, meta={**clf.meta, "preprocessing": LEGACY_DOMAIN}))
    first = REPO / "assets" / "examples" / "ISIC_0026468.jpg"
    small = FULLRES / "twins" / "ISIC_0026468.jpg"
    a, b = old.classify_many([("f", first.read_bytes()), ("t", small.read_bytes())])
    assert a.top_class != b.top_class or a.flags != b.flags


# ----------------------------------------------------------------------------- dermatoscope shift
def test_shift_families_parse_and_refuse_unknown_names():
    assert parse_shift("all") == SHIFT_FAMILIES
    assert parse_shift("gamma,colour-cast") == ("colour-cast", "gamma")
    assert parse_shift("") == ()
    with pytest.raises(ValueError, match="unknown --shift family fog"):
        parse_shift("gamma,fog")


@pytest.mark.parametrize("family", SHIFT_FAMILIES)
def test_each_shift_family_changes_images_in_range_and_reproducibly(family):
    img = torch.from_numpy(decode_image(PAIRS[2][1])).permute(2, 0, 1).float().div(255)
    x = img[None].repeat(8, 1, 1, 1)
    a = shift_batch(x.clone(), (family,), torch.Generator().manual_seed(3))
    b = shift_batch(x.clone(), (family,), torch.Generator().manual_seed(3))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    changed = [(a[i] - x[i]).abs().mean().item() > 1e-3 for i in range(8)]
    assert any(changed) and not all(changed) or family == "vignette" and any(changed)
    assert torch.equal(shift_batch(x, (), None), x)


def test_the_vignette_darkens_corners_not_the_centre():
    x = torch.full((64, 3, 60, 80), 0.8)
    out = shift_batch(x, ("vignette",), torch.Generator().manual_seed(0))
    hit = (out - x).abs().flatten(1).max(1).values > 1e-3
    assert hit.any()
    assert (out[hit][:, :, 30, 40] - 0.8).abs().max() < 0.01
    assert (out[hit][:, :, 0, 0] < 0.75).all()


def test_train_py_records_the_input_path_and_shift(tmp_path, ham_small):
    import json
    import subprocess
    import sys

    out = tmp_path / "b"
    r = subprocess.run([sys.executable, "train.py", "classify", "--data", str(ham_small), "--out", str(out),
                        "--epochs", "1", "--arch", "test_efficientnet", "--batch-size", "16", "--shift", "all",
                        "--colour-constancy", "shades-of-gray"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preprocessing"]["colour_constancy"] == {"method": "shades_of_gray", "p": 6.0}
    assert meta["preprocessing"]["capture_size"] == [150, 200] and meta["train_config"]["shift"] == "all"
    bad = subprocess.run([sys.executable, "train.py", "segment", "--data", str(ham_small), "--out", str(tmp_path / "s"),
                          "--epochs", "1", "--shift", "gamma"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--shift applies to the classifier only" in bad.stderr


def test_jpeg_bytes_of_any_quality_decode_to_the_same_domain():
    rgb = decode_image(PAIRS[0][0])
    answers = []
    for q in (60, 95):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        answers.append(to_training_domain(decode_image(buf.getvalue()), DEFAULT_DOMAIN).astype(float))
    assert np.abs(answers[0] - answers[1]).mean() < 2.5
