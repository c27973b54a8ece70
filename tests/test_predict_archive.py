"""`python -m model.cli.predict` on folders, zips and files: streamed (files read only when their turn
comes), bad files get an error line and the run goes on, ISIC 2018 columns in ISIC order whatever
the bundle's class order, ISIC Task 1 masks at the image's own size, CSV output."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from model.data.checklist import NAMES
from model.data.isic import ISIC2018_COLUMNS, HAM_TO_ISIC2018
from model.cli.predict import main
from model.data.sources import Sources


@pytest.fixture()
def inputs(tmp_path, ham_small):
    images = sorted((ham_small / "images").glob("*.jpg"))
    folder = tmp_path / "folder" / "nested"
    folder.mkdir(parents=True)
    for p in images[:5]:
        shutil.copy(p, folder)
    (tmp_path / "folder" / "notes.txt").write_text("not an image, ignored")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in images[5:12]:
            zf.write(p, f"batch/{p.name}")
        zf.writestr("batch/broken.jpg", b"\xff\xd8 not really a jpeg")
        zf.writestr("README.md", "ignored")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    return [tmp_path / "folder", archive, bad, images[12]]


def test_jsonl_over_folders_zips_and_files_with_bad_files(tiny_classifier_dir, inputs, capsys):
    assert main([str(tiny_classifier_dir), *map(str, inputs), "--batch-size", "4"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 5 + 7 + 1
    assert all("nested" in r["image"] for r in records[:5]) and all(r["image"].startswith("batch/ISIC_")
                                                                    for r in records[5:12])
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in records)
    assert "batch/broken.jpg: error:" in err and "bad.png: error:" in err
    assert "2 of 15 files could not be used" in err
    assert "img/s" not in err, "no progress bar when stderr is not a terminal"


def test_isic2018_columns_follow_isic_order(tiny_classifier_dir, inputs, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    assert main([str(tiny_classifier_dir), str(inputs[1]), "--format", "isic2018", "--out", str(out)]) == 1
    capsys.readouterr()
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert len(rows) == 8 and all(r[0].startswith("ISIC_") and "." not in r[0] for r in rows[1:])
    assert main([str(tiny_classifier_dir), str(inputs[1])]) == 1
    by_name = {json.loads(line)["image"].rsplit("/", 1)[-1][:-4]: json.loads(line)["probabilities"]
               for line in capsys.readouterr().out.splitlines()}
    isic_of = {v: k for k, v in HAM_TO_ISIC2018.items()}
    for row in rows[1:]:
        for col, value in zip(ISIC2018_COLUMNS, row[1:]):
            assert float(value) == pytest.approx(by_name[row[0]][isic_of[col]], abs=1e-4)


def test_csv_format(tiny_classifier_dir, inputs, capsys):
    assert main([str(tiny_classifier_dir), str(inputs[3]), "--format", "csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    classes = json.loads((tiny_classifier_dir / "meta.json").read_text())["classes"]
    assert rows[0][:7] == ["image", "top_class", "top_probability", "malignant_probability", "melanoma_flag", "flags",
                       "prediction_set"]
    n = 7 + len(classes)
    assert rows[0][7:n] == classes and rows[0][n] == "original_name" and len(rows) == 2
    assert rows[0][n + 1:] == ["seven_point_score", *(f"concept_{c}" for c in NAMES)]   # issue 24
    assert rows[1][n + 1:] == [""] * 8                       # this bundle has no concept probes


def test_isic_masks_at_each_images_own_size(tiny_models_dir, fullres, ham_small, tmp_path, capsys):
    masks = tmp_path / "masks"
    one_small = sorted((ham_small / "images").glob("*.jpg"))[0]
    assert main([str(tiny_models_dir), str(fullres / "images"), str(one_small), "--masks", str(masks),
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    written = sorted(p.name for p in masks.iterdir())
    assert written == sorted([f"{p.stem}_segmentation.png" for p in (fullres / "images").glob("*.jpg")]
                             + [f"{one_small.stem}_segmentation.png"])
    for name in written:
        stem = name[:-len("_segmentation.png")]
        src = next(p for p in [*(fullres / "images").glob("*.jpg"), one_small] if p.stem == stem)
        with Image.open(masks / name) as m, Image.open(src) as im:
            assert m.size == im.size and m.mode == "L"
            assert set(np.unique(np.asarray(m))) <= {0, 255}
    # a segmenter bundle alone writes masks only; without --masks it says what to add
    assert main([str(tiny_models_dir / "segmenter"), str(one_small), "--masks", str(tmp_path / "m2")]) == 0
    assert (tmp_path / "m2" / f"{one_small.stem}_segmentation.png").is_file()
    assert main([str(tiny_models_dir / "segmenter"), str(one_small)]) == 2
    assert "--masks" in capsys.readouterr().err


def test_sources_read_files_only_when_their_turn_comes(tmp_path, ham_small):
    for p in sorted((ham_small / "images").glob("*.jpg"))[:4]:
        shutil.copy(p, tmp_path)
    sources = Sources([tmp_path])
    assert len(sources) == 4
    it = iter(sources)
    first = next(it)
    assert first.data and first.error is None
    for p in tmp_path.glob("*.jpg"):
        if p.name not in first.name:
            p.unlink()  # removed after listing: read lazily, so they now fail one by one
    rest = list(it)
    assert len(rest) == 3 and all(r.data is None and "cannot read" in r.error for r in rest)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_classifier_dir, inputs, capsys):
    assert main([str(tiny_classifier_dir), str(inputs[3]), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_progress_bar_on_a_terminal(tiny_classifier_dir, ham_small, repo_root):
    main_fd, term_fd = pty.openpty()
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen([sys.executable, "-m", "model.cli.predict", str(tiny_classifier_dir),
                             str(ham_small / "images"), "--batch-size", "8"],
                            cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=term_fd)
    os.close(term_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    out = proc.communicate(timeout=120)[0]
    os.close(main_fd)
    assert proc.returncode == 0
    assert "42/42" in shown.decode() and "img/s" in shown.decode()
    assert len(out.decode().splitlines()) == 42  # the records stay on stdout, the bar on the terminal


# ----------------------------------------------------------------------------- hostile input, round 3 (issue 27)
HOSTILE_NAMES = ['=HYPERLINK("http:__evil","z").jpg', "=cmd|' -C calc'!A0.jpg", "+cmd.jpg", "-2+3.jpg", "@SUM(1).jpg"]


def test_the_cli_csv_neutralises_formula_names(tiny_classifier_dir, ham_small, tmp_path, capsys):
    """Names a spreadsheet would evaluate were written as they are; the app's CSV neutralised them."""
    import zipfile

    from model.files import FORMULA_STARTS

    archive = tmp_path / "in.zip"
    img = next((ham_small / "images").glob("*.jpg")).read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        for n in HOSTILE_NAMES:
            zf.writestr(n, img)
    for fmt in ("csv", "isic2018"):
        out = tmp_path / f"p.{fmt}.csv"
        assert main([str(tiny_classifier_dir), str(archive), "--format", fmt, "--out", str(out)]) == 0
        cells = [row[0] for row in csv.reader(out.open())][1:]
        assert len(cells) == len(HOSTILE_NAMES)
        assert not any(c.lstrip().startswith(FORMULA_STARTS) for c in cells), cells
        assert any(c.startswith("'=HYPERLINK") or "'=HYPERLINK" in c for c in cells), cells


def test_out_that_is_an_input_is_refused_and_kept(tiny_classifier_dir, ham_small, tmp_path, capsys):
    victim = tmp_path / "x.jpg"
    victim.write_bytes(next((ham_small / "images").glob("*.jpg")).read_bytes())
    before = victim.read_bytes()
    assert main([str(tiny_classifier_dir), str(victim), "--out", str(victim)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_out_appears_only_when_the_run_ends(tiny_classifier_dir, ham_small, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main([str(tiny_classifier_dir), str(ham_small / "images"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 42
    assert not list(tmp_path.glob(".p.jsonl.*"))  # no temporary file left beside it


def test_control_characters_in_names_cannot_forge_lines(tiny_classifier_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a\nx.jpg: error: forged.jpg").write_bytes(b"not an image")
    (folder / "b\u202egpj.txt.jpg").write_bytes(b"not an image")
    assert main([str(tiny_classifier_dir), str(folder)]) == 1
    err = capsys.readouterr().err
    assert "\\nx.jpg: error: forged" in err and "\\u202e" in err
    assert not any(line.startswith("x.jpg: error: forged") for line in err.splitlines())


@pytest.mark.parametrize("kind", ["empty zip", "zip of folders", "empty folder"])
def test_nothing_predicted_is_an_error_that_says_what_was_found(tiny_classifier_dir, tmp_path, capsys, kind):
    import zipfile

    target = tmp_path / ("in.zip" if "zip" in kind else "in")
    if kind == "empty folder":
        target.mkdir()
    else:
        with zipfile.ZipFile(target, "w") as zf:
            if kind == "zip of folders":
                zf.writestr("a/", "")
                zf.writestr("a/b/", "")
    assert main([str(tiny_classifier_dir), str(target)]) == 1
    assert "nothing was predicted: 0 image(s) found" in capsys.readouterr().err
