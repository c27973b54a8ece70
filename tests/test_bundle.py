"""Bundles: round trips, safetensors only (never unpickled), and clear errors for bad ones."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.nets.bundle import BundleError, Bundle, load_bundle, read_meta, save_bundle, update_meta, validate_meta
from model.nets.forward import calibrated_probs, classifier_logits, segment_probs


def _images(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (150, 200, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def bundle_copy(tiny_classifier_dir, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_classifier_dir, dst, ignore=shutil.ignore_patterns(".train"))
    return dst


def _edit_meta(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_classifier_bundle_loads(tiny_classifier_dir):
    b = load_bundle(tiny_classifier_dir)
    assert isinstance(b, Bundle) and b.task == "classify"
    assert b.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert b.input_size == (64, 80)
    assert not b.model.training
    assert 0.05 <= b.temperature <= 20
    assert set(b.extras) == {"ood_mean", "ood_precision"}
    logits = classifier_logits(b, _images(3))
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    probs = calibrated_probs(b, logits)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert "test_resnet" in b.version


def test_segmenter_bundle_loads(tiny_segmenter_dir):
    b = load_bundle(tiny_segmenter_dir)
    assert b.task == "segment" and b.classes == [] and b.input_size == (64, 96)
    maps = segment_probs(b, _images(2))
    assert [m.shape for m in maps] == [(150, 200)] * 2
    assert all(0 <= m.min() and m.max() <= 1 for m in maps)


def test_round_trip_identical_logits(tiny_classifier_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DERMO_ENGINE", "torch")   # bit-identical needs one runtime (the copy has no model.onnx)
    b = load_bundle(tiny_classifier_dir)
    before = classifier_logits(b, _images())
    out = save_bundle(tmp_path / "again", b.model, b.meta, extras=b.extras)
    again = load_bundle(out)
    assert again.meta["weights_dtype"] == "float32"
    np.testing.assert_array_equal(classifier_logits(again, _images()), before)
    for k, v in b.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert set(again.extras) == set(b.extras)
    assert again.classes == b.classes and again.temperature == b.temperature


def test_round_trip_half_precision(tiny_classifier_dir, tmp_path):
    b = load_bundle(tiny_classifier_dir)
    before = classifier_logits(b, _images())
    out = save_bundle(tmp_path / "half", b.model, b.meta, half=True)
    full_size = (tiny_classifier_dir / "weights.safetensors").stat().st_size
    assert (out / "weights.safetensors").stat().st_size < 0.6 * full_size
    half = load_bundle(out)
    assert half.meta["weights_dtype"] == "float16"
    assert next(half.model.parameters()).dtype == torch.float32  # upcast on load
    after = classifier_logits(half, _images())
    np.testing.assert_allclose(after, before, atol=2e-2 * max(1.0, float(np.abs(before).max())), rtol=1e-2)
    assert (after.argmax(1) == before.argmax(1)).mean() >= 0.8


def test_segmenter_round_trip(tiny_segmenter_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DERMO_ENGINE", "torch")   # bit-identical needs one runtime (the copy has no model.onnx)
    b = load_bundle(tiny_segmenter_dir)
    before = segment_probs(b, _images(2))
    after = segment_probs(load_bundle(save_bundle(tmp_path / "seg", b.model, b.meta)), _images(2))
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_update_meta(bundle_copy):
    meta = update_meta(bundle_copy, note="hello", temperature=1.5)
    assert meta["note"] == "hello"
    assert read_meta(bundle_copy)["temperature"] == 1.5
    assert load_bundle(bundle_copy).temperature == 1.5


# ----------------------------------------------------------------------------- never unpickled
class _Payload:
    """Unpickling this creates `marker` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_really_would_run(tmp_path):
    """Sanity check of the test below: unpickling the payload does create its marker."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_disguised_as_safetensors_is_refused(bundle_copy, tmp_path, how):
    marker = tmp_path / "PWNED"
    weights = bundle_copy / "weights.safetensors"
    if how == "pickle":
        weights.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    else:
        torch.save({"model": _Payload(marker)}, weights)
    with pytest.raises(BundleError, match="safetensors") as err:
        load_bundle(bundle_copy)
    assert "never unpickled" in str(err.value)
    assert not marker.exists(), "the pickle was executed"


def test_pickle_disguised_as_extras_is_refused(bundle_copy, tmp_path):
    marker = tmp_path / "PWNED"
    (bundle_copy / "extras.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(BundleError, match="extras.safetensors"):
        load_bundle(bundle_copy)
    assert not marker.exists()


def test_truncated_weights(bundle_copy):
    w = bundle_copy / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(BundleError, match="not a valid safetensors"):
        load_bundle(bundle_copy)


# ----------------------------------------------------------------------------- bad meta.json
def test_missing_pieces(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="No meta.json"):
        load_bundle(tmp_path / "does-not-exist")
    (bundle_copy / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="No weights.safetensors"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
])
def test_malformed_meta_json(bundle_copy, text, message):
    (bundle_copy / "meta.json").write_text(text)
    with pytest.raises(BundleError, match=message):
        read_meta(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_meta_json_not_utf8(bundle_copy):
    (bundle_copy / "meta.json").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("changes, message", [
    ({"task": "detect"}, "'task' must be one of"),
    ({"input_size": [64]}, "input_size"),
    ({"input_size": [64, -1]}, "input_size"),
    ({"input_size": "64x80"}, "input_size"),
    ({"mean": [0.5, 0.5]}, "mean"),
    ({"std": None}, "std"),
    ({"classes": ["mel", "mel", "nv", "bcc", "bkl", "df", "vasc"]}, "distinct"),
    ({"classes": ["mel"]}, "classes"),
    ({"schema": 99}, "newer than this code"),
])
def test_invalid_meta_fields(bundle_copy, changes, message):
    _edit_meta(bundle_copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_meta_missing_required_key(bundle_copy):
    meta = json.loads((bundle_copy / "meta.json").read_text())
    del meta["classes"], meta["mean"]
    (bundle_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="lacks classes, mean"):
        load_bundle(bundle_copy)


def test_wrong_class_count_vs_weights(bundle_copy):
    _edit_meta(bundle_copy, classes=["akiec", "bcc", "bkl", "df", "mel", "nv"])  # 6 names, 7 outputs
    with pytest.raises(BundleError, match=r"do not match the architecture.*6 outputs") as err:
        load_bundle(bundle_copy)
    assert "(7,) vs (6,)" in str(err.value)  # names the disagreeing tensor shapes


def test_wrong_arch_vs_weights(bundle_copy):
    _edit_meta(bundle_copy, arch="test_efficientnet")
    with pytest.raises(BundleError, match="do not match the architecture in meta.json \\(test_efficientnet"):
        load_bundle(bundle_copy)


def test_unknown_arch(bundle_copy):
    _edit_meta(bundle_copy, arch="no_such_network_v9")
    with pytest.raises(BundleError, match="cannot be built.*no_such_network_v9"):
        load_bundle(bundle_copy)


def test_segmenter_with_classifier_weights(tiny_classifier_dir, tiny_segmenter_dir, tmp_path):
    dst = tmp_path / "mixed"
    shutil.copytree(tiny_segmenter_dir, dst, ignore=shutil.ignore_patterns(".train"))
    shutil.copy(tiny_classifier_dir / "weights.safetensors", dst / "weights.safetensors")
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(dst)


def test_save_bundle_validates_meta(tiny_classifier_dir, tmp_path):
    b = load_bundle(tiny_classifier_dir)
    with pytest.raises(BundleError):
        save_bundle(tmp_path / "bad", b.model, {**b.meta, "classes": "mel"})
    assert not (tmp_path / "bad" / "weights.safetensors").exists()
    with pytest.raises(BundleError):
        validate_meta("just a string")


def test_tiny_models_dir_has_the_assets_layout(tiny_models_dir):
    assert sorted(p.name for p in tiny_models_dir.iterdir()) == ["classifier", "segmenter"]
    assert load_bundle(tiny_models_dir / "classifier").task == "classify"
    assert load_bundle(tiny_models_dir / "segmenter").task == "segment"
    assert not (tiny_models_dir / "classifier" / ".train").exists()  # no checkpoints, like a shipped bundle
