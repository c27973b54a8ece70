"""Data-parallel training (torchrun, Gloo on CPU): per-rank shares of one draw are disjoint and
make up the single-process batches; a 2-process run writes one valid bundle; a killed 2-process
run resumes on 1 process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.training.distributed import Dist, from_main, rank_batches, sum_across, sync_batchnorm
from model.training.loop import epoch_order

REPO = Path(__file__).resolve().parents[1]
HAM_SMALL = REPO / "tests" / "data" / "ham_small"
TRAIN = ["train.py", "classify", "--data", str(HAM_SMALL), "--arch", "test_resnet", "--img-size", "64", "80",
         "--batch-size", "4", "--warmup", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]


@pytest.mark.parametrize("balanced", [0.0, 1.0, 0.5])  # natural (and weighted loss), balanced, square-root
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n,batch", [(103, 8), (40, 8), (5, 8)])
def test_rank_shares_are_disjoint_and_make_up_the_draw(balanced, world, n, batch):
    labels = np.random.default_rng(1).choice(7, size=n, p=[.5, .2, .1, .08, .06, .04, .02])
    draw = epoch_order(labels, balanced, np.random.default_rng(0))  # what every rank draws
    single = list(rank_batches(draw, batch, Dist()))
    positions = np.arange(len(draw))  # shares are judged by position: a draw with replacement repeats images
    shares = [list(rank_batches(positions, batch, Dist(r, world))) for r in range(world)]
    assert len({len(s) for s in shares}) == 1, "every rank takes the same number of steps"
    flat = [np.concatenate(s) for s in shares]
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(flat[a]) & set(flat[b]), "shares overlap"
    for step, batch_idx in enumerate(single):  # each global batch is exactly the union of the ranks' parts
        parts = np.concatenate([shares[r][step] for r in range(world)])
        assert np.array_equal(draw[np.sort(parts)], batch_idx)
    covered = np.sort(np.concatenate(flat))
    kept = len(draw) - (len(draw) % batch if len(draw) > batch else 0)
    assert np.array_equal(covered, np.arange(kept)), "shares cover the draw (less the dropped short last batch)"


def test_single_process_helpers_are_no_ops():
    d = Dist()
    assert d.main and not d.active
    assert from_main({"score": 0.5}, d) == {"score": 0.5}
    assert sum_across([3, 1.5], d) == [3, 1.5]
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert sync_batchnorm(model, d, torch.device("cpu")) is model


def test_sync_bn_on_cpu_says_it_needs_gpus():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="needs GPUs"):
        sync_batchnorm(model, Dist(0, 2), torch.device("cpu"))


@pytest.mark.slow
def test_two_process_gloo_run_writes_one_valid_bundle(tmp_path):
    from model.nets.bundle import load_bundle

    out = tmp_path / "bundle"
    run = subprocess.run([*_torchrun(2), *TRAIN, "--out", str(out), "--epochs", "2"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.count("bundle written to") == 1, "rank 0 alone writes and reports"
    assert run.stdout.count("epoch=1 ") == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo", "batch_size": "global",
                                   "batch_size_per_rank": 2, "sync_bn": False}
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["command"].startswith("torchrun --nproc_per_node 2 train.py")
    assert meta["metrics"]["test"]["n"] > 0 and 0 < meta["temperature"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["REFERENCE-SET.md", "extras.safetensors", "meta.json", "model.onnx", "similar-thumbs.safetensors",
         "similar.safetensors", "split.json", "weights.safetensors"]   # one of each: rank 0 alone wrote them
    assert "conformal" in meta and "similar" in meta
    from model.evaluation.evaluate import evaluate_classifier
    from model.data.dataset import records_for_split

    bundle = load_bundle(out)  # rank 0 scored the whole test split, as `python -m model.cli.evaluate` does
    again = evaluate_classifier(bundle, records_for_split(out, HAM_SMALL, "test"), progress=False)
    assert again["n"] == meta["metrics"]["test"]["n"] > 0
    assert again["balanced_accuracy"] == pytest.approx(meta["metrics"]["test"]["balanced_accuracy"])


@pytest.mark.slow
def test_killed_rank_stops_the_run_and_it_resumes_on_one_process(tmp_path):
    from model.nets.bundle import load_bundle
    from model.training.loop import load_checkpoint

    out = tmp_path / "bundle"
    last = out / ".train" / "last.pt"
    log = tmp_path / "train.log"
    with open(log, "w") as logf:
        launcher = subprocess.Popen([*_torchrun(2), *TRAIN, "--out", str(out), "--epochs", "400"], cwd=REPO,
                                    env=ENV, stdout=logf, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not last.is_file():
                assert launcher.poll() is None, f"ended before its first checkpoint:\n{log.read_text()[-3000:]}"
                assert time.time() < deadline, "no checkpoint after 240 s"
                time.sleep(0.05)
            children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
            assert len(children) == 2, children
            os.kill(int(children[-1]), signal.SIGKILL)  # one worker dies; the launcher must stop the other
            launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait(timeout=30)
    assert launcher.returncode != 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    assert not (out / "meta.json").exists()
    ck = load_checkpoint(last)  # the last good checkpoint is whole
    done = ck["epoch"]
    assert 1 <= done < 400 and [h["epoch"] for h in ck["history"]] == list(range(1, done + 1))

    run = subprocess.run([sys.executable, *TRAIN, "--out", str(out), "--epochs", str(done + 2), "--resume"],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert f"resumed after epoch {done}" in run.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["history"][:done] == ck["history"]
    assert meta["distributed"]["world_size"] == 1
    assert meta["commands"][0].startswith("torchrun") and meta["commands"][-1].endswith("--resume")
    assert load_bundle(out).classes == meta["classes"]
