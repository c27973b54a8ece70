"""ROAD faithfulness: our faster imputer solves the same system as pytorch-grad-cam's; a heatmap on
the pixels a model really uses scores higher than one elsewhere; the CLI writes its figures into
meta.json beside the other interpretability figures; the storage and review helpers stay torch-free."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch

from model.explain.road import FastImputer, road_scores
from model.cli.faithfulness import main


@pytest.mark.parametrize("removed", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", ["speckle", "blob"])
def test_fast_imputer_matches_the_library(removed, shape):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 30, 40, generator=g)
    if shape == "speckle":
        mask = (torch.rand(30, 40, generator=g) > removed).float()
    else:  # one smooth heat peak, thresholded as ROAD does: large connected holes, deep dissection
        yy, xx = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
        heat = torch.exp(-((yy - 12) ** 2 + (xx - 25) ** 2) / 150)
        mask = (heat < torch.quantile(heat, removed)).float().logical_not().float()
    torch.manual_seed(1)
    ours = FastImputer()(x, mask)
    torch.manual_seed(1)
    theirs = NoisyLinearImputer()(x, mask)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(ours[:, mask.bool()], x[:, mask.bool()])  # kept pixels untouched


def test_nested_dissection_is_a_permutation_and_keeps_separators_last():
    from model.explain.road_imputer import nested_dissection

    rows, cols = np.divmod(np.arange(30 * 40), 40)
    order = nested_dissection(rows, cols, leaf=16)
    assert sorted(order.tolist()) == list(range(30 * 40))
    assert cols[order[-30:]].tolist() == [20] * 30  # the first cut (across the longer side) comes last


class LeftHalf(torch.nn.Module):
    """Class 0's logit is the brightness of the left half only; class 1's is constant."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        left = x[:, :, :, : x.shape[3] // 2].mean(dim=(1, 2, 3)) * 4 * self.w
        return torch.stack([left, torch.zeros_like(left)], 1)


def test_a_heatmap_on_the_evidence_scores_higher():
    model = LeftHalf().eval()
    x = torch.zeros(1, 3, 24, 32)
    x[..., :16] = 1.0 + 0.1 * torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(0))
    yy, xx = np.mgrid[:24, :32]
    right_cam = (xx / 31.0).astype(np.float32)          # heat on the right: the wrong place
    left_cam = right_cam[:, ::-1].copy()                  # heat on the left, where the logit comes from
    good, bad = road_scores(model, x, left_cam, 0), road_scores(model, x, right_cam, 0)
    assert good["road"] > bad["road"] + 0.05, (good, bad)
    assert good["morf"] < bad["morf"]
    assert road_scores(model, x, left_cam, 0) == good  # seeded noise: the same answer every time


@pytest.mark.slow
def test_cli_writes_figures_and_keeps_the_other_ones(tiny_classifier_dir, ham_small, tmp_path):
    import shutil

    bundle = tmp_path / "classifier"
    shutil.copytree(tiny_classifier_dir, bundle, ignore=shutil.ignore_patterns(".train"))
    meta = json.loads((bundle / "meta.json").read_text())
    meta["interpretability"] = {"gradcam_in_lesion": {"shipped": {"mean_share": 0.5}}}
    (bundle / "meta.json").write_text(json.dumps(meta))
    assert main([str(bundle), "--data", str(ham_small), "--split", "all", "--limit", "3",
                 "--methods", "gradcam", "eigencam"]) == 0
    interp = json.loads((bundle / "meta.json").read_text())["interpretability"]
    assert interp["gradcam_in_lesion"] == {"shipped": {"mean_share": 0.5}}
    fig = interp["faithfulness"]
    assert fig["n_images"] == 3 and "subset of 3" in fig["subset"]
    layers = {r["layer"] for r in fig["rows"]}
    assert {r["method"] for r in fig["rows"]} == {"gradcam", "eigencam"} and len(fig["rows"]) == 2 * len(layers)
    for r in fig["rows"]:
        assert r["n"] == 3 and np.isclose(r["road"], (r["lerf"] - r["morf"]) / 2, atol=2e-4)
        assert 0 <= r["heat_in_lesion"] <= 1


def test_all_layers_in_one_pass_equal_layer_by_layer(tiny_classifier_dir, ham_small):
    from model.nets.bundle import load_bundle
    from model.nets.classifier import feature_layers
    from model.explain.road import input_cams, layer_cams
    from model.explain.cams import CAM_METHODS
    from model.data.preprocess import decode_image, normalize, to_uint8_batch

    b = load_bundle(tiny_classifier_dir)
    x = normalize(to_uint8_batch([decode_image(next((ham_small / "images").glob("*.jpg")))], b.input_size),
                  b.mean, b.std)
    layers = range(len(feature_layers(b.model)))
    together, cls = layer_cams(b, x, list(CAM_METHODS), layers)
    for l in layers:
        alone, cls_l = input_cams(b, x, list(CAM_METHODS), None, l)
        assert cls_l == cls
        for m in CAM_METHODS:
            np.testing.assert_allclose(together[(m, l)], alone[m], atol=1e-5)


def test_cache_resumes_and_a_time_limit_keeps_what_is_done(tiny_classifier_dir, ham_small, tmp_path, monkeypatch):
    from model.explain import road_split as fs
    from model.nets.bundle import load_bundle
    from model.data.dataset import records_for_split

    b = load_bundle(tiny_classifier_dir)
    records = fs.ordered(records_for_split(tiny_classifier_dir, ham_small, "all"), 3)
    cache = tmp_path / "cache" / "scores.jsonl"
    layers = ["layer1", "layer2"] if "layer1" in fs.feature_layers(b.model) else fs.feature_layers(b.model)[:2]
    first = fs.compute(b, records[:1], ["gradcam", "eigencam"], layers, cache=cache, progress=False)
    assert len(first) == 4 and len(cache.read_text().splitlines()) == 4
    # out of time before any new image: only the cached one counts, and nothing is recomputed
    calls = []
    monkeypatch.setattr(fs, "image_scores", lambda *a, **k: calls.append(a) or None)
    partial = fs.compute(b, records, ["gradcam", "eigencam"], layers, cache=cache, time_limit=1e-9, progress=False)
    assert calls == [] and {r["image"] for r in partial} == {records[0].image_id}
    rows = fs.aggregate(partial)
    assert len(rows) == 4 and all(r["n"] == 1 and r["road_sem"] is None for r in rows)
    # another model's cached scores are not taken for this one's
    assert fs.read_cache(cache, "someone-else/p10/s0") == []
    with cache.open("a") as f:
        f.write('{"key": "torn')  # a run killed mid-line
    assert len(fs.read_cache(cache, fs.weights_key(b, fs.PERCENTILES))) == 4
    # a gzip cache: appends are new members; a member cut short keeps what came before it
    import gzip

    gz = tmp_path / "scores.jsonl.gz"
    gz.write_bytes(gzip.compress("\n".join(cache.read_text().splitlines()[:4]).encode() + b"\n"))
    monkeypatch.undo()
    fs.compute(b, records[:2], ["gradcam", "eigencam"], layers, cache=gz, progress=False)
    assert len(fs.read_cache(gz, fs.weights_key(b, fs.PERCENTILES))) == 8
    gz.write_bytes(gz.read_bytes() + gzip.compress(b'{"key": "x"}\n' * 50)[:30])
    assert len(fs.read_cache(gz, fs.weights_key(b, fs.PERCENTILES))) == 8


def test_worker_processes_appending_at_once_leave_whole_images(tmp_path):
    import gzip
    import multiprocessing as mp

    from model.explain.road_split import read_cache

    gz = tmp_path / "scores.jsonl.gz"
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(gz, w) for w in range(4)])
    rows = read_cache(gz, "k")
    assert len(rows) == 4 * 25 * 24 and len(gzip.decompress(gz.read_bytes()).splitlines()) == len(rows)
    assert {(r["w"], r["i"]) for r in rows} == {(w, i) for w in range(4) for i in range(25)}


def _append_many(job):
    from model.explain.road_split import append

    path, w = job
    for i in range(25):
        append(path, "".join(json.dumps({"key": "k", "w": w, "i": i, "pad": "x" * 300}) + "\n" for _ in range(24)))


@pytest.mark.slow
def test_workers_stop_when_the_run_is_killed(tiny_classifier_dir, ham_small, tmp_path):
    import os
    import signal
    import time

    cache = tmp_path / "scores.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "model.cli.faithfulness", str(tiny_classifier_dir), "--data",
                             str(ham_small), "--split", "all", "--workers", "2", "--cache", str(cache), "--dry-run"],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 2):
        time.sleep(0.2)
    assert cache.exists(), "no image finished"
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)  # the workers are orphaned: each finishes its image, then stops
    proc.wait(10)
    time.sleep(8)
    settled = len(cache.read_text().splitlines())
    time.sleep(6)
    assert len(cache.read_text().splitlines()) == settled < 42 * 10
    assert not [pid for pid in workers if _alive(pid)], "orphaned workers kept running"


def _worker_pids(parent: int) -> list[int]:
    """Pool workers (multiprocessing spawn) whose parent is `parent` (Linux /proc)."""
    from pathlib import Path

    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and b"spawn_main" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_rows_of_other_layers_are_kept_and_the_coverage_is_said():
    from model.explain.road_split import coverage, merged_rows

    old = {"rows": [{"method": "gradcam", "layer": "a", "n": 40}, {"method": "gradcam", "layer": "b", "n": 40}]}
    new = [{"method": "gradcam", "layer": "b", "n": 100}]
    assert merged_rows(old, new, same_settings=True) == [old["rows"][0], new[0]]
    assert merged_rows(old, new, same_settings=False) == new
    from model.explain.road_split import aggregate

    row = {"image": "a", "method": "gradcam", "layer": "b", "road": 0.1, "morf": -0.2, "lerf": 0.0, "share": 0.5}
    broken = {**row, "image": "b", "share": float("nan")}
    assert [r["n"] for r in aggregate([row, row, broken])] == [1]  # duplicates once, a broken heatmap not at all
    assert coverage([{"n": 100}], 100, "test") is None
    assert coverage([{"n": 40}], 100, "test") == "seeded random subset of 40 of 100 test images"
    assert coverage([{"n": 40}, {"n": 100}], 100, "test") == (
        "the whole test split (100 images) for some rows, a seeded random subset of 40 images for the others "
        "(images per row in the table)")
    assert "subsets of 40-60 images" in coverage([{"n": 40}, {"n": 60}, {"n": 100}], 100, "test")


def test_review_and_its_helpers_do_not_import_torch(repo_root):
    code = ("import sys; import review, review.stats; assert 'streamlit' not in sys.modules, 'streamlit'; "
            "import app.studies.cases, app.studies.figures; "
            "bad = [m for m in ('torch', 'timm', 'pytorch_grad_cam') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True, timeout=120)


def test_shipped_classifier_records_faithfulness_for_every_method_and_layer(repo_root):
    from model.explain.road_split import aggregate
    from model.explain.cams import CAM_METHODS

    bundle = repo_root / "assets" / "models" / "classifier"
    meta = json.loads((bundle / "meta.json").read_text())
    fig = meta["interpretability"]["faithfulness"]
    assert fig["split"] == "test" and fig["split_hash"] == meta["split"]["hash"]
    assert all(c.startswith("python -m model.cli.faithfulness assets/models/classifier") for c in fig["commands"])
    layers = {r["layer"] for r in fig["rows"]}
    assert {(r["method"], r["layer"]) for r in fig["rows"]} == {(m, l) for m in CAM_METHODS for l in layers}
    assert all(r["n"] >= 100 for r in fig["rows"])
    # the app's default layer (the last stage) is measured, on the whole test split or a seeded random
    # part of it that the card names (fig["subset"]); a resumed run extends it from the shipped cache
    last = [r for r in fig["rows"] if r["layer"] == "blocks.6"]
    split_size = len(json.loads((bundle / "split.json").read_text())["splits"]["test"])
    assert last and fig["split_size"] == split_size and all(r["n"] >= 500 for r in last)
    assert fig["subset"] or all(r["n"] == split_size for r in fig["rows"])
    if all(r["n"] == split_size for r in last):  # then its Grad-CAM heat share is heat_in_lesion's figure
        focus = meta["interpretability"]["gradcam_in_lesion"]["shipped"]
        gradcam = next(r for r in last if r["method"] == "gradcam")
        assert focus["layer"] == gradcam["layer"] and abs(gradcam["heat_in_lesion"] - focus["mean_share"]) < 1e-3
    # every mean on the card comes from the per-image scores shipped beside the weights
    lines = gzip.decompress((bundle / "faithfulness-scores.jsonl.gz").read_bytes()).decode().splitlines()
    again = {(r["method"], r["layer"]): r for r in aggregate(json.loads(line) for line in lines)}
    for r in fig["rows"]:
        assert again[(r["method"], r["layer"])] == r


def test_markdown_table_puts_methods_in_rows_and_layers_in_columns():
    from model.explain.road_split import markdown_table

    rows = [{"method": "hirescam", "layer": "blocks.6", "n": 10, "road": 0.1234, "road_sem": 0.0021, "heat_in_lesion": 0.4},
            {"method": "gradcam", "layer": "blocks.6", "n": 9, "road": -0.05, "road_sem": 0.003, "heat_in_lesion": None},
            {"method": "gradcam", "layer": "blocks.0", "n": 5, "road": 0.01, "road_sem": None, "heat_in_lesion": 0.25}]
    lines = markdown_table(rows, ["blocks.0", "blocks.3", "blocks.6"]).splitlines()
    assert lines[0] == "| ROAD ± s.e. (heat on lesion) | blocks.0 (n=5) | blocks.6 (n=9-10) |"   # no row at blocks.3
    assert lines[2] == "| Grad-CAM | +0.010 (0.25) | -0.050 ± 0.003 |"        # the offered order: Grad-CAM first
    assert lines[3] == "| HiResCAM | – | +0.123 ± 0.002 (0.40) |"
    assert len(lines) == 4


def test_our_removal_is_the_librarys_and_needs_no_matplotlib():
    """ROAD's pixel removal is ours (the library's package imports matplotlib, which wrote a font
    cache under HOME on the first faithfulness click); it must remove exactly what the library does."""
    import subprocess
    import sys

    import torch
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    from model.explain.road import remove
    from model.explain.road_imputer import FastImputer

    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x, cam = torch.rand(3, 24, 32, generator=gen), torch.rand(24, 32, generator=gen)
        for p in (10, 50, 90):
            for most, lib in ((True, RemoveMostRelevantFirst), (False, RemoveLeastRelevantFirst)):
                torch.manual_seed(0)
                ours = remove(x, cam, p, most, FastImputer())
                torch.manual_seed(0)
                theirs = lib(p, FastImputer())(x, cam)
                assert torch.equal(ours, theirs)
    code = ("import sys, numpy as np, torch; from model.explain.road import road_scores; "
            "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3*16*16, 3)); "
            "road_scores(m, torch.rand(1, 3, 16, 16), np.random.rand(16, 16), 0); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('matplotlib', 'pytorch_grad_cam')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_several_heatmaps_at_once_score_as_each_alone():
    """Issue 26.14: road_many solves the imputations of all heatmaps together (equal masks once, two
    threads) and must give exactly what one heatmap at a time gives, equal heatmaps included."""
    from model.explain.road import road_many

    model = LeftHalf().eval()
    x = torch.zeros(1, 3, 24, 32)
    x[..., :16] = 1.0 + 0.1 * torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(0))
    yy, xx = np.mgrid[:24, :32]
    cams = {"right": (xx / 31.0).astype(np.float32), "left": (1 - xx / 31.0).astype(np.float32),
            "rows": (yy / 23.0).astype(np.float32)}
    cams["same"] = cams["left"].copy()
    together = road_many(model, x, cams, 0)
    assert all(together[k] == road_many(model, x, {k: c}, 0)[k] for k, c in cams.items())
    assert together["same"] == together["left"]
