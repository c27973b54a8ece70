"""One shared Analyzer (as the app's st.cache_resource gives every session) analysing different
images with different options in several threads at once returns exactly what it returns when
the same requests run one by one."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import numpy as np

from app_fixtures import app_models_dir  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
IMAGES = sorted((REPO / "assets" / "examples").glob("*.jpg"))[:4] + sorted(
    (REPO / "tests" / "data" / "fullres" / "images").glob("*.jpg"))[:2]
THREADS = 4


def _requests(analyzer) -> list[dict]:
    classes, layers = analyzer.classes, analyzer.layers
    methods = [("gradcam",), ("gradcam++", "layercam"), ("hirescam", "eigencam"), ("xgradcam",)]
    return [{"source": IMAGES[i % len(IMAGES)].read_bytes(), "cam_class": classes[i % len(classes)],
             "cam_layer": layers[-1 - i % 2], "cam_methods": methods[i % len(methods)], "tta": bool(i % 2),
             "feature_layer": layers[i % len(layers)]} for i in range(2 * THREADS)]


def _assert_same(a, b) -> None:
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
    assert (a.cam_class, a.cam_layer, sorted(a.cams)) == (b.cam_class, b.cam_layer, sorted(b.cams))
    for m in a.cams:
        np.testing.assert_allclose(a.cams[m], b.cams[m], rtol=0, atol=1e-5)
    assert a.feature_maps.channels == b.feature_maps.channels
    np.testing.assert_allclose(a.feature_maps.maps, b.feature_maps.maps, rtol=0, atol=1e-5)
    assert (a.lesion_mask is None) == (b.lesion_mask is None)
    if a.lesion_mask is not None:
        assert np.array_equal(a.lesion_mask, b.lesion_mask)
    assert a.quality_warnings == b.quality_warnings


def test_threads_sharing_one_analyzer_get_single_thread_results(app_models_dir):
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(app_models_dir, device="cpu")
    requests = _requests(analyzer)
    expected = [analyzer.analyze(**r) for r in requests]
    start = Barrier(THREADS)

    def worker(k: int):
        start.wait()  # all threads enter the model together
        return [(i, analyzer.analyze(**requests[i])) for i in range(k, len(requests), THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for chunk in pool.map(worker, range(THREADS)) for r in chunk]
    assert len(results) == len(requests)
    for i, got in results:
        _assert_same(got, expected[i])
    # and batch classification in parallel matches too
    items = [(p.name, p.read_bytes()) for p in IMAGES]
    ref = analyzer.classify_many(items)
    with ThreadPoolExecutor(THREADS) as pool:
        for preds in pool.map(lambda _: analyzer.classify_many(items), range(THREADS)):
            for p, q in zip(preds, ref):
                np.testing.assert_allclose(p.probabilities, q.probabilities, rtol=0, atol=1e-6)
