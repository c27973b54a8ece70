"""model.nets.engine and model.nets.onnx_export: the shipped bundles give the same answers through every
installed runtime as through torch (real images), a stale or foreign model.onnx is refused, and
engines are built once and shared safely."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from model.nets.bundle import load_bundle
from model.nets.engine import EngineError, build_engine, check_onnx, engine_for, installed
from model.explain.cams import CAM_METHODS
from model.nets.onnx_export import ONNX_FILE, export_bundle, weights_sha256
from model.inference.pipeline import Analyzer
from model.data.preprocess import decode_with_size, normalize, to_uint8_batch

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "assets" / "models"
IMAGES = sorted((REPO / "assets" / "examples").glob("*.jpg"))[:4] + sorted((REPO / "tests" / "data" / "fullres" / "images").glob("*"))[:2]
ENGINES = [k for k in installed() if k != "torch"]


def _corr(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if a.std() < 1e-7 and b.std() < 1e-7:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def shipped():
    return {p: load_bundle(MODELS / p) for p in ("classifier", "segmenter")}


@pytest.fixture(scope="module")
def batch(shipped):
    rgbs = [decode_with_size(p.read_bytes(), [], max_side=1024)[0] for p in IMAGES]
    return {p: normalize(to_uint8_batch(rgbs, b.input_size), b.mean, b.std) for p, b in shipped.items()}


def test_shipped_onnx_files_are_tied_to_their_weights(shipped):
    for b in shipped.values():
        assert check_onnx(b).stat().st_size < 10e6   # float16 storage: about the safetensors' size (Space limit)
        import onnxruntime as ort

        meta = ort.InferenceSession(str(b.path / ONNX_FILE)).get_modelmeta().custom_metadata_map
        assert meta["weights_sha256"] == weights_sha256(b.path)


@pytest.mark.parametrize("kind", ENGINES)
def test_engine_outputs_match_torch_on_real_images(shipped, batch, kind):
    for part, b in shipped.items():
        ref = build_engine(b, "torch", 2)(batch[part])
        got = build_engine(b, kind, 2)(batch[part])
        assert set(got) == set(ref)
        for name in ref:
            assert got[name].shape == ref[name].shape
            scale = max(1.0, float(np.abs(ref[name]).max()))
            assert np.abs(got[name] - ref[name]).max() <= 1e-4 * scale, (part, name)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENGINES)
def test_full_analysis_is_the_same_through_the_engine(kind, monkeypatch):
    monkeypatch.setenv("DERMO_ENGINE", "torch")
    ref = Analyzer.from_dir(MODELS)
    monkeypatch.setenv("DERMO_ENGINE", kind)
    eng = Analyzer.from_dir(MODELS)
    assert eng.engine.kind == kind and ref.engine.kind == "torch"
    for p in IMAGES[:3]:
        kw = dict(cam_methods=tuple(CAM_METHODS), tta=True, feature_layer=ref.layers[-1])
        a, b = ref.analyze(p.read_bytes(), **kw), eng.analyze(p.read_bytes(), **kw)
        assert "forward-only" in b.runtime["cam"] and "autograd" in a.runtime["cam"]
        assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
        assert np.array_equal(a.lesion_mask, b.lesion_mask), p.name
        for m in CAM_METHODS:
            assert _corr(a.cams[m], b.cams[m]) >= 0.999, (p.name, m)
        assert a.feature_maps.channels == b.feature_maps.channels
        assert np.abs(a.feature_maps.maps - b.feature_maps.maps).max() < 1e-3
        # an earlier CAM layer needs the body's gradients: torch runs it, and says so
        early = eng.analyze(p.read_bytes(), cam_layer=eng.layers[1])
        assert "autograd" in early.runtime["cam"]
    rows_a = ref.classify_many([(p.name, p.read_bytes()) for p in IMAGES], tta=True)
    rows_b = eng.classify_many([(p.name, p.read_bytes()) for p in IMAGES], tta=True)
    for x, y in zip(rows_a, rows_b):
        assert x.top_class == y.top_class and np.abs(x.probabilities - y.probabilities).max() < 1e-4


def test_stale_or_foreign_onnx_is_refused(tmp_path, shipped, monkeypatch):
    seg = tmp_path / "segmenter"
    shutil.copytree(MODELS / "segmenter", seg)
    shutil.copy(MODELS / "classifier" / ONNX_FILE, seg / ONNX_FILE)   # another bundle's file
    b = load_bundle(seg)
    with pytest.raises(EngineError, match="other weights.*model.cli.onnx_export"):
        check_onnx(b)
    for kind in ENGINES:
        with pytest.raises(EngineError, match="stale"):
            build_engine(b, kind, 1)
    with pytest.warns(UserWarning, match="stale"):
        fwd = build_engine(b, "auto", 1)
    assert fwd.kind == "torch" and "stale" in fwd.note
    (seg / ONNX_FILE).unlink()
    with pytest.raises(EngineError, match="No model.onnx.*python -m model.cli.onnx_export"):
        check_onnx(b)
    (seg / ONNX_FILE).write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="not a readable ONNX"):
        check_onnx(b)


def test_export_cli_rebuilds_a_bundles_file(tmp_path, tiny_classifier_dir):
    from model.cli.onnx_export import main

    b = tmp_path / "cls"
    shutil.copytree(tiny_classifier_dir, b, ignore=shutil.ignore_patterns(".train", ONNX_FILE))
    assert main([str(b)]) == 0
    bundle = load_bundle(b)
    assert check_onnx(bundle) == b / ONNX_FILE
    assert main([str(tmp_path / "nowhere")]) == 1


def test_training_writes_model_onnx(tiny_classifier_dir, tiny_segmenter_dir):
    for d in (tiny_classifier_dir, tiny_segmenter_dir):
        check_onnx(load_bundle(d))   # train.py exported it, tied to the saved weights


def test_engine_is_built_once_and_settings_are_checked(shipped, monkeypatch):
    b = shipped["segmenter"]
    assert engine_for(b) is engine_for(b)
    monkeypatch.setenv("DERMO_ENGINE", "tensorflow")
    with pytest.raises(EngineError, match="choose one of"):
        engine_for(b)
    monkeypatch.setenv("DERMO_ENGINE", "auto")
    monkeypatch.setenv("DERMO_ENGINE_THREADS", "two")
    with pytest.raises(EngineError, match="whole number"):
        engine_for(b)
    monkeypatch.setenv("DERMO_ENGINE_THREADS", "1")
    assert engine_for(b).threads == 1


@pytest.mark.parametrize("kind", ENGINES)
def test_threads_sharing_one_engine_get_their_own_results(shipped, batch, kind):
    b = shipped["classifier"]
    fwd = build_engine(b, kind, 2)
    xs = [batch["classifier"][i:i + 1] for i in range(4)]
    want = [fwd(x, ["logits"])["logits"] for x in xs]
    got = [None] * 4

    def work(i):
        for _ in range(3):
            got[i] = fwd(xs[i], ["logits"])["logits"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


def test_the_page_small_print_names_each_runtime():
    from app.widgets.components import runtime_line

    line = runtime_line({"classifier": "ONNX Runtime 1.31.1 (CPU, 2 threads)", "cam": "torch autograd (cpu)"})
    assert line.startswith("Ran on: classification — ONNX Runtime") and "CAMs — torch autograd" in line


def test_without_an_engine_installed_torch_runs_with_the_same_answers(shipped, batch, monkeypatch):
    import model.nets.engine as engine

    b = shipped["classifier"]
    want = build_engine(b, "onnxruntime", 1)(batch["classifier"], ["logits"])["logits"]
    monkeypatch.setattr(engine, "installed", lambda: ["torch"])
    fwd = build_engine(b, "auto", 1)
    assert fwd.kind == "torch"
    assert np.abs(fwd(batch["classifier"], ["logits"])["logits"] - want).max() < 1e-4
    with pytest.raises(EngineError, match="not installed"):
        build_engine(b, "onnxruntime", 1)


def test_big_batches_run_in_chunks_with_the_same_results(shipped, batch):
    fwd = build_engine(shipped["segmenter"], "onnxruntime", 1)
    x = batch["segmenter"]
    assert len(x) > 4                                  # more than one chunk
    whole = fwd(x, ["logits"])["logits"]
    one_by_one = np.concatenate([fwd(x[i:i + 1], ["logits"])["logits"] for i in range(len(x))])
    assert whole.shape == one_by_one.shape and np.abs(whole - one_by_one).max() < 1e-5
