"""model.nets.lanes: parts come back in order, errors reach the caller, a busy pool never blocks a
caller, and the engine's lanes give the same answers as one call per image."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from model.nets.lanes import lanes_pool, run_parts, submit_or_run


def test_parts_come_back_in_order_and_use_a_helper():
    names = set()

    def fn(p):
        names.add(threading.current_thread().name)
        time.sleep(0.02)
        return p * 2

    assert run_parts(lanes_pool(2), 2, fn, list(range(6))) == [0, 2, 4, 6, 8, 10]
    assert len(names) == 2          # the caller and one helper both worked
    assert run_parts(None, 1, fn, [1, 2]) == [2, 4]


def test_an_error_in_a_part_is_raised_to_the_caller():
    def fn(p):
        if p == 3:
            raise ValueError("bad part")
        return p

    with pytest.raises(ValueError, match="bad part"):
        run_parts(lanes_pool(2), 2, fn, list(range(5)))


def test_a_busy_pool_leaves_the_work_to_the_caller():
    pool = lanes_pool(2)
    release = threading.Event()
    blocker = pool.submit(release.wait)          # the only helper is busy
    try:
        t0 = time.perf_counter()
        assert run_parts(pool, 2, lambda p: p + 1, [1, 2, 3]) == [2, 3, 4]
        assert submit_or_run(pool, lambda: "ran").result() == "ran"
        assert time.perf_counter() - t0 < 1.0   # did not wait for the blocker
    finally:
        release.set()
        blocker.result()


def test_engine_lanes_match_single_image_calls():
    from pathlib import Path

    from model.nets.bundle import load_bundle
    from model.nets.engine import build_engine, installed

    if "onnxruntime" not in installed():
        pytest.skip("onnxruntime is not installed")
    b = load_bundle(Path(__file__).resolve().parents[1] / "assets" / "models" / "classifier")
    fwd = build_engine(b, "onnxruntime", 2)
    assert fwd.lanes == 2 and "lanes" in fwd.label
    x = np.random.default_rng(0).normal(size=(7, 3, *b.input_size)).astype(np.float32)
    whole = fwd(x, ["logits", "features"])
    for i in range(len(x)):
        one = fwd(x[i:i + 1], ["logits", "features"])
        for k in one:
            assert np.abs(whole[k][i] - one[k][0]).max() <= 1e-4 * max(1.0, float(np.abs(one[k]).max()))


def test_the_pool_counts_its_free_helpers():
    pool = lanes_pool(2)
    assert pool.idle() == 1
    release = threading.Event()
    job = pool.submit(release.wait)
    queued = pool.submit(lambda: None)
    assert pool.idle() == 0
    assert queued.cancel()
    release.set()
    job.result()
    time.sleep(0.01)
    assert pool.idle() == 1


def test_an_analysis_never_waits_behind_other_sessions_jobs(monkeypatch):
    """With the helper lane held by someone else's job, an analysis runs its own queued jobs itself
    and returns what it returns with the helper free."""
    from pathlib import Path

    from model.nets.engine import installed
    from model.inference.pipeline import Analyzer

    if "onnxruntime" not in installed():
        pytest.skip("onnxruntime is not installed")
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("DERMO_ENGINE_THREADS", "2")      # whatever thread count earlier tests left to torch
    analyzer = Analyzer.from_dir(repo / "assets" / "models", "cpu")
    assert analyzer.engine.lanes == 2
    data = (repo / "assets" / "examples" / "ISIC_0025032.jpg").read_bytes()
    kw = dict(cam_methods=("gradcam", "eigencam"), tta=True, feature_layer=analyzer.layers[-1])
    free = analyzer.analyze(data, **kw)
    assert "helper lane" in free.runtime["tta"] and "beside" in free.runtime["segmenter"]
    pool = lanes_pool(analyzer.engine.lanes)
    release = threading.Event()
    blocker = pool.submit(release.wait, 30)
    try:
        t0 = time.perf_counter()
        held = analyzer.analyze(data, **kw)
        assert time.perf_counter() - t0 < 20 and not blocker.done()
    finally:
        release.set()
        blocker.result()
    assert np.abs(free.probabilities - held.probabilities).max() < 1e-6
    assert np.array_equal(free.lesion_mask, held.lesion_mask) and free.measurements == held.measurements
    assert free.quality_warnings == held.quality_warnings and free.tta_agreement == held.tta_agreement
    assert [n.image_id for n in free.similar.neighbours] == [n.image_id for n in held.similar.neighbours]
    for m in kw["cam_methods"]:
        assert np.abs(free.cams[m] - held.cams[m]).max() < 1e-5


def test_fixed_batch_sessions_give_the_dynamic_sessions_outputs():
    from pathlib import Path

    import onnxruntime as ort

    from model.nets.bundle import load_bundle
    from model.nets.engine import CHUNK, build_engine, check_onnx

    b = load_bundle(Path(__file__).resolve().parents[1] / "assets" / "models" / "segmenter")
    fwd = build_engine(b, "onnxruntime", 2)
    dynamic = ort.InferenceSession(str(check_onnx(b)), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).normal(size=(CHUNK + 3, 3, *b.input_size)).astype(np.float32)
    for n in (1, 3, CHUNK + 3):
        want = dynamic.run(["logits"], {"image": x[:n]})[0]
        got = fwd(x[:n], ["logits"])["logits"]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert set(fwd._sessions) <= set(range(1, CHUNK + 1)) and 3 in fwd._sessions
