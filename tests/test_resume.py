"""Training survives being killed: SIGKILL mid-epoch, then `--resume` finishes with every epoch in
the bundle's history; a checkpoint write that dies half-way never replaces a good checkpoint and
its leftover is never loaded; unreadable images in the dataset are skipped and counted."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HAM_SMALL = REPO / "tests" / "data" / "ham_small"
TINY = ["--arch", "test_resnet", "--img-size", "64", "80"]


def _train_args(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["classify", "--data", str(data), "--out", str(out), *TINY, "--epochs", str(epochs),
            "--batch-size", "4", "--warmup", "0", *extra]


def _run_train_in_process(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    import train

    threads = torch.get_num_threads()
    try:
        return train.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_interrupted_checkpoint_write_keeps_the_good_one(tmp_path):
    from model.training.loop import load_checkpoint, save_checkpoint

    path = tmp_path / ".train" / "last.pt"
    good = {"model": {"w": torch.arange(1000.0)}, "epoch": 1}
    save_checkpoint(path, good)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(path, {"model": {"w": torch.zeros(10**6)}, "epoch": 2, "oops": Unpicklable()})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest      # untouched
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["model"]["w"], good["model"]["w"])


def test_sigkill_mid_epoch_then_resume(tmp_path, capsys):
    from model.nets.bundle import load_bundle
    from model.training.loop import load_checkpoint

    out = tmp_path / "bundle"
    last = out / ".train" / "last.pt"
    log = tmp_path / "train.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, "train.py", *_train_args(HAM_SMALL, out, 3)], cwd=REPO, env=env,
                                stdout=logf, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not last.is_file():
                assert proc.poll() is None, f"training ended before its first checkpoint:\n{log.read_text()[-3000:]}"
                assert time.time() < deadline, "no checkpoint after 240 s"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # epoch 2 has just begun
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "meta.json").exists(), "the run finished before it could be killed"

    ck = load_checkpoint(last)                    # the checkpoint on disk is whole
    done = ck["epoch"]
    assert 1 <= done < 3 and [h["epoch"] for h in ck["history"]] == list(range(1, done + 1))
    assert ck["best_epoch"] >= 1 and "best_model" in ck  # the best weights travel with the history
    # leftovers of a write that was cut short must never be read: plant garbage ones
    for name in (".last.pt.tmp", ".best.pt.tmp"):
        (out / ".train" / name).write_bytes(b"\x00garbage from a killed write")

    assert _run_train_in_process(_train_args(HAM_SMALL, out, 3, "--resume")) == 0
    printed = capsys.readouterr().out
    assert f"resumed after epoch {done}" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert meta["history"][:done] == ck["history"]           # the first run's epochs are kept as they were
    if "commands" in meta:                                    # both invocations are recorded
        assert len(meta["commands"]) == 2 and meta["commands"][-1].endswith("--resume")
    bundle = load_bundle(out)
    assert bundle.classes == meta["classes"]


def test_resume_keeps_the_recorded_best_even_if_best_pt_is_stale(tmp_path, capsys):
    """last.pt holds the best weights with the history that names their epoch: a kill between the
    two checkpoint writes leaves a best.pt that disagrees, and the resumed run ships last.pt's best."""
    from model.nets.bundle import load_bundle
    from model.training.loop import load_checkpoint, save_checkpoint

    out = tmp_path / "bundle"
    assert _run_train_in_process(_train_args(HAM_SMALL, out, 2)) == 0
    ck = load_checkpoint(out / ".train" / "last.pt")
    assert 1 <= ck["best_epoch"] <= 2 and "best_model" in ck
    best_pt = load_checkpoint(out / ".train" / "best.pt")
    assert best_pt["epoch"] == ck["best_epoch"]
    for k, v in ck["best_model"].items():
        assert torch.equal(best_pt["model"][k], v), k
    stale = {k: torch.zeros_like(v) for k, v in ck["best_model"].items()}
    save_checkpoint(out / ".train" / "best.pt", {"model": stale, "epoch": 3})  # as if from an unrecorded epoch

    assert _run_train_in_process(_train_args(HAM_SMALL, out, 2, "--resume")) == 0
    assert "resumed after epoch 2" in capsys.readouterr().out
    model = load_bundle(out).model
    shipped = model.state_dict()
    floats = [k for k, v in ck["best_model"].items() if v.is_floating_point() and v.abs().sum() > 0]
    assert floats
    for k in floats:
        torch.testing.assert_close(shipped[k].float(), ck["best_model"][k].float())


def test_keep_last_ships_the_final_epoch(tmp_path):
    """--keep last (here on a finished run, resumed) ships the last epoch's weights and says so."""
    from model.nets.bundle import load_bundle
    from model.training.loop import load_checkpoint, save_checkpoint

    out = tmp_path / "bundle"
    assert _run_train_in_process(_train_args(HAM_SMALL, out, 2)) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kept_epoch"] == meta["best_epoch"]
    ck = load_checkpoint(out / ".train" / "last.pt")
    # make the recorded best differ from the last epoch for certain
    ck_edit = {**ck, "best_epoch": 1, "best_model": {k: torch.zeros_like(v) for k, v in ck["model"].items()}}
    save_checkpoint(out / ".train" / "last.pt", ck_edit)
    assert _run_train_in_process(_train_args(HAM_SMALL, out, 2, "--resume", "--keep", "last")) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kept_epoch"] == 2 and meta["best_epoch"] == 1 and meta["train_config"]["keep"] == "last"
    shipped = load_bundle(out).model.state_dict()
    for k, v in ck["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(shipped[k].float(), v.float())


def test_corrupt_images_are_skipped_and_counted(tmp_path, capsys):
    from model.data.dataset import load_dataset, split_records

    data = tmp_path / "ham"
    shutil.copytree(HAM_SMALL, data)
    ds = load_dataset(data)
    train_ids = split_records(ds.records, seed=0)["train"]   # train.py's default split
    by_id = {r.image_id: r for r in ds.records}
    truncated, text = by_id[train_ids[0]].image_path, by_id[train_ids[1]].image_path
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text.write_text("this is not a JPEG\n")

    out = tmp_path / "bundle"
    assert _run_train_in_process(_train_args(data, out, 1)) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["skipped_unreadable"] == 2
    assert meta["data"]["train_images"] == len(train_ids) - 2
    for f in ("weights.safetensors", "meta.json", "extras.safetensors"):
        assert (out / f).stat().st_mode & 0o044 == 0o044, f"{f} is not readable by other users"
    printed = capsys.readouterr().out
    assert "2 skipped" in printed and ("truncated" in printed or "not an image" in printed)
