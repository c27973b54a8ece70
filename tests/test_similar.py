"""Similar cases: building the reference set, leakage (training split only), bundle mismatch,
recognising an upload that is itself a reference image, the kNN vote and the shipped set."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from model.aids.similar import (ATTRIBUTION, INDEX, THUMBS, ReferenceSetError, ReferenceIndex, difference_hash,
                                vote_shares)
from model.cli.similar import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "models" / "classifier"


@pytest.fixture(scope="module")
def built(tiny_classifier_dir, ham_small, tmp_path_factory) -> Path:
    """A copy of the tiny classifier with its reference set rebuilt by the CLI (and measured on test)."""
    out = tmp_path_factory.mktemp("similar") / "classifier"
    shutil.copytree(tiny_classifier_dir, out, ignore=shutil.ignore_patterns(".train"))
    for f in (INDEX, THUMBS):
        (out / f).unlink(missing_ok=True)
    assert main(["build", str(out), "--data", str(ham_small), "--dims", "16"]) == 0
    return out


def _split(bundle: Path) -> dict[str, set[str]]:
    return {k: set(v) for k, v in json.loads((bundle / "split.json").read_text())["splits"].items()}


def _load(bundle: Path) -> ReferenceIndex:
    return ReferenceIndex.load(bundle, json.loads((bundle / "meta.json").read_text())["classes"])


def test_build_writes_index_thumbnails_attribution_and_test_figures(built):
    index = _load(built)
    meta = json.loads((built / "meta.json").read_text())
    assert meta["similar"]["n"] == len(index) > 0 and meta["similar"]["dims"] == 16
    t = meta["similar"]["test"]
    assert 0 <= t["knn_balanced_accuracy"] <= 1 and 0 <= t["softmax_balanced_accuracy"] <= 1
    assert set(t["precision_at_k"]) == set(meta["classes"])
    assert "HAM10000" in (built / ATTRIBUTION).read_text()
    thumb = index.thumbnail(0)
    assert thumb[:2] == b"\xff\xd8"  # a JPEG
    assert index.cases[0][1] in ("histo", "follow_up", "consensus", "confocal")  # dx_type from metadata.csv


def test_reference_set_holds_training_images_only(built):
    ids = {c[0] for c in _load(built).cases}
    split = _split(built)
    assert ids == split["train"] & ids and len(ids) == len(split["train"])
    assert not ids & (split["val"] | split["test"])


def test_shipped_reference_set_is_training_only_small_and_matches_its_bundle():
    if not (SHIPPED / INDEX).is_file():
        pytest.skip("no reference set shipped")
    index = _load(SHIPPED)  # also checks the weights' hash
    split = _split(SHIPPED)
    ids = [c[0] for c in index.cases]
    assert len(ids) == len(set(ids)) == len(split["train"])
    assert set(ids) == split["train"]
    assert not set(ids) & (split["val"] | split["test"])
    assert sum((SHIPPED / f).stat().st_size for f in (INDEX, THUMBS, ATTRIBUTION)) < 20 * 2**20
    assert all((SHIPPED / f).stat().st_size < 10 * 2**20 for f in (INDEX, THUMBS))  # no LFS on a Space
    meta = json.loads((SHIPPED / "meta.json").read_text())
    assert meta["similar"]["n"] == len(ids) and "test" in meta["similar"] and "test" in meta["conformal"]


def test_index_for_other_weights_is_refused(built, tmp_path):
    other = tmp_path / "classifier"
    shutil.copytree(built, other)
    state = load_file(str(other / "weights.safetensors"))
    name = next(k for k, v in state.items() if v.dtype.kind == "f")
    state[name] = state[name] + 1
    save_file(state, str(other / "weights.safetensors"))
    with pytest.raises(ReferenceSetError, match="other weights.*Rebuild it with `python -m model.cli.similar build"):
        _load(other)
    with pytest.raises(ReferenceSetError, match="other classes"):
        ReferenceIndex.load(built, ["a", "b"])


def test_analyzer_keeps_the_mismatch_as_a_message_and_shows_no_neighbours(built, tmp_path, ham_small):
    from model.nets.bundle import load_bundle
    from model.inference.pipeline import Analyzer

    other = tmp_path / "classifier"
    shutil.copytree(built, other)
    state = load_file(str(other / "weights.safetensors"))
    name = next(k for k, v in state.items() if v.dtype.kind == "f")
    state[name] = state[name] * 1.01
    save_file(state, str(other / "weights.safetensors"))
    image = next((ham_small / "images").iterdir()).read_bytes()
    a = Analyzer(load_bundle(other)).analyze(image, segment=False)
    assert a.similar is None and "other weights" in a.similar_error
    ok = Analyzer(load_bundle(built)).analyze(image, segment=False)
    assert ok.similar is not None and len(ok.similar.neighbours) == 6 and ok.similar_error is None


def test_upload_of_a_reference_image_is_recognised(built, ham_small):
    from PIL import Image
    import io

    from model.nets.bundle import load_bundle
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer(load_bundle(built))
    train_id = sorted(_split(built)["train"])[0]
    data = (ham_small / "images" / f"{train_id}.jpg").read_bytes()
    a = analyzer.analyze(data, segment=False)
    assert a.similar.neighbours[0].image_id == train_id
    assert a.similar.neighbours[0].similarity == pytest.approx(1.0, abs=0.01)
    assert "exact file" in a.similar.in_reference and train_id in a.similar.in_reference
    big = Image.open(io.BytesIO(data)).resize((600, 450), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "PNG")
    resized = analyzer.analyze(buf.getvalue(), segment=False)
    assert resized.similar.in_reference and train_id in resized.similar.in_reference
    test_id = sorted(_split(built)["test"])[0]
    other = analyzer.analyze((ham_small / "images" / f"{test_id}.jpg").read_bytes(), segment=False)
    assert other.similar.in_reference is None


def test_vote_shares_weigh_neighbours_by_similarity():
    shares = vote_shares(np.array([[0, 0, 1]]), np.array([[0.9, 0.5, 0.8]]), 3)
    np.testing.assert_allclose(shares, [[1.4 / 2.2, 0.8 / 2.2, 0]])


def test_difference_hash_survives_resizing(ham_small):
    from model.data.preprocess import decode_image, resize_rgb

    img = decode_image(next((ham_small / "images").iterdir()))
    a, b = difference_hash(img), difference_hash(resize_rgb(img, (450, 600)))
    assert bin(a ^ b).count("1") <= 4


def test_bench_search_times_numpy_and_faiss_on_a_simulated_set():
    from bench.similar_search import bench_search, simulated

    emb = simulated(np.eye(8, dtype=np.float32), 40)
    r = bench_search(emb, 500, 5)
    assert r["n"] == 500 and r["numpy_matmul"]["median_ms"] > 0 and r["numpy_einsum"]["median_ms"] > 0
    assert isinstance(r["faiss"], (dict, str))
