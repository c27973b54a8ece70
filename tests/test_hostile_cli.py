"""Hostile input to `python -m model.cli.predict`, round 3 (issue 27): mask names that cannot be
written or collide, files that are not regular or too large, names with control and
bidirectional characters, zips inside folders, and inputs that hold nothing."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from model.cli.predict import main, mask_name
from model.data.sources import MAX_FILE_BYTES

RLO = "\u202e"


@pytest.fixture
def jpeg(ham_small) -> bytes:
    return next(iter(sorted((ham_small / "images").glob("*.jpg")))).read_bytes()


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_long_and_duplicate_mask_names_are_written_without_stopping_the_run(tiny_models_dir, jpeg, tmp_path, capsys):
    archive = tmp_path / "long.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/" + "x" * 300 + ".jpg", jpeg)        # no file system takes a 317-byte name
        zf.writestr("a/dup.jpg", jpeg)
        zf.writestr("b/dup.jpg", jpeg)                      # same base name, other folder
        for k in range(3):
            zf.writestr(f"ok{k}.jpg", jpeg)
    masks = tmp_path / "masks"
    assert main([str(tiny_models_dir), str(archive), "--masks", str(masks)]) == 0
    written = sorted(p.name for p in masks.iterdir())
    assert len(written) == 6, written
    assert "dup_segmentation.png" in written and "dup (2)_segmentation.png" in written
    assert all(len(n.encode()) <= 255 for n in written)
    assert len(records(capsys.readouterr().out)) == 6


def test_mask_name_is_unique_and_short_enough():
    used: set[str] = set()
    names = [mask_name("é" * 200, used), mask_name("é" * 200, used), mask_name("../x", used), mask_name("", used)]
    assert len(set(names)) == 4 and all(len(n.encode()) <= 255 for n in names)
    assert not any("/" in n for n in names)


def test_a_mask_that_cannot_be_written_is_one_line_and_the_run_goes_on(tiny_models_dir, jpeg, tmp_path, capsys,
                                                                       monkeypatch):
    from PIL import Image
    real_save = Image.Image.save

    def save(self, fp, *a, **k):
        if "bad" in str(fp):
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    for name in ("bad.jpg", "good1.jpg", "good2.jpg"):
        (tmp_path / name).write_bytes(jpeg)
    masks = tmp_path / "masks"
    rc = main([str(tiny_models_dir), *(str(tmp_path / n) for n in ("bad.jpg", "good1.jpg", "good2.jpg")),
               "--masks", str(masks)])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.jpg: error: mask not written (No space left on device)" in err
    assert sorted(p.name for p in masks.iterdir()) == ["good1_segmentation.png", "good2_segmentation.png"]


def run_cli(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    from tests.conftest import subprocess_env
    return subprocess.run([sys.executable, "-m", "model.cli.predict", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or subprocess_env(), cwd=Path(__file__).resolve().parents[1])


def test_devices_fifos_and_huge_files_are_refused_with_one_line(tiny_classifier_dir, jpeg, tmp_path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.jpg")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg)
    (folder / "b.jpg").write_bytes(jpeg)
    with open(folder / "huge.tif", "wb") as f:      # sparse: 6 GB on paper, nothing on disk
        f.truncate(6 * 2**30)
    done = run_cli([str(tiny_classifier_dir), str(tmp_path / "zero.jpg"), str(tmp_path / "pipe.jpg"), str(folder)],
                   timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert "zero.jpg: error: not read: a device" in done.stderr
    assert "pipe.jpg: error: not read: a FIFO" in done.stderr
    assert f"huge.tif: error: not read: 6,144 MB, over the {MAX_FILE_BYTES // 2**20} MB limit" in done.stderr
    assert sorted(Path(r["image"]).name for r in records(done.stdout)) == ["a.jpg", "b.jpg"]


def test_bidirectional_and_control_characters_never_reach_the_output(tiny_classifier_dir, jpeg, tmp_path, capsys):
    forged = tmp_path / f"gpj.{RLO}evil\nx.jpg: error: forged.jpg"
    forged.write_bytes(jpeg)
    assert main([str(tiny_classifier_dir), str(forged)]) == 0
    out, err = capsys.readouterr()
    rec = records(out)[0]
    assert RLO not in rec["image"] and "\n" not in rec["image"]
    assert rec["original_name"] == str(forged)
    assert main([str(tiny_classifier_dir), str(forged), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert RLO not in out and out.count("\n") == 2 and "\\u202eevil\\nx.jpg" in out   # the original, escaped


def test_zips_in_folders_are_opened_and_empty_inputs_say_so(tiny_classifier_dir, jpeg, tmp_path, capsys):
    folder = tmp_path / "only-zips"
    folder.mkdir()
    with zipfile.ZipFile(folder / "one.zip", "w") as zf:
        zf.writestr("in/one.jpg", jpeg)
        zf.writestr("inner.zip", b"PK\x05\x06" + b"\0" * 18)
    assert main([str(tiny_classifier_dir), str(folder)]) == 1      # the nested zip is reported, not opened
    out, err = capsys.readouterr()
    assert [r["image"] for r in records(out)] == ["in/one.jpg"]
    assert "found 1 image in 1 folder, 1 zip archive" in err and "inner.zip: error: nested archive not opened" in err

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("dir/", b"")
    assert main([str(tiny_classifier_dir), str(empty)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error: nothing was predicted: 0 image(s)" in err and "found 0 images in 1 zip archive" in err


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_run_writes_nowhere_but_its_outputs(repo_root, ham_small, tmp_path, engine):
    """ONNX Runtime wrote ~/.cache/Microsoft/.../onnxruntime.db and OpenVINO ~/intel/stats on every run,
    and warned when HOME was not writable. Only --out and --masks may change now."""
    pytest.importorskip(engine)
    from tests.conftest import subprocess_env
    home, tmp, out = tmp_path / "home", tmp_path / "tmp", tmp_path / "out"
    for d in (home, tmp, out):
        d.mkdir()
    env = subprocess_env()
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1", DERMO_ENGINE=engine)
    env.pop("XDG_CACHE_HOME", None)
    image = sorted((ham_small / "images").glob("*.jpg"))[0]
    done = subprocess.run([sys.executable, "-m", "model.cli.predict", str(repo_root / "assets" / "models"), str(image),
                           "--out", str(out / "p.jsonl"), "--masks", str(out / "masks")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert list(home.rglob("*")) == [] and list(tmp.rglob("*")) == []
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "masks", f"masks/{image.stem}_segmentation.png", "p.jsonl"]
    env["HOME"] = "/nonexistent-home"      # an unwritable HOME: nothing to warn about either
    done = subprocess.run([sys.executable, "-m", "model.cli.predict", str(repo_root / "assets" / "models"), str(image)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=repo_root)
    assert done.returncode == 0 and done.stderr.strip() == "found 1 image in 1 file", done.stderr
