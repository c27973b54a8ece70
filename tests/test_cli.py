"""Command lines, run as a user would (subprocess): `python -m model.cli.evaluate`, `python train.py`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env
from model.data.dataset import read_split


def run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def classifier_copy(tiny_classifier_dir, tmp_path) -> Path:
    """A private copy, so that reports written into the bundle folder stay out of the shared fixture."""
    dst = tmp_path / "classifier"
    shutil.copytree(tiny_classifier_dir, dst, ignore=shutil.ignore_patterns(".train"))
    return dst


def test_evaluate_all_writes_json_and_html(classifier_copy, ham_small, tmp_path):
    out_json, out_html = tmp_path / "out" / "metrics.json", tmp_path / "report.html"
    r = run("-m", "model.cli.evaluate", str(classifier_copy), "--data", str(ham_small), "--split", "all",
            "--json", str(out_json), "--html", str(out_html))
    assert r.returncode == 0, r.stderr
    report = json.loads(out_json.read_text())
    assert report["split"] == "all" and report["n"] == 42
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "macro_auc", "ece",
                "ece_before_temperature", "ece_after_temperature", "melanoma_sensitivity", "melanoma_specificity"):
        assert key in report, key
    assert 0 <= report["balanced_accuracy"] <= 1
    assert len(report["confusion_matrix"]) == 7 and sum(map(sum, report["confusion_matrix"])) == 42
    assert set(report["per_class"]) == set(report["classes"])
    assert report["skipped"] == []
    assert "balanced_accuracy" in r.stdout
    page = out_html.read_text()
    assert page.startswith("<html") and "Plotly.newPlot" in page and "Confusion matrix" in page
    assert not (classifier_copy / "evaluation-all.html").exists()


def test_evaluate_test_split_uses_the_bundle_split(classifier_copy, ham_small, tmp_path):
    out_json = tmp_path / "test.json"
    r = run("-m", "model.cli.evaluate", str(classifier_copy), "--data", str(ham_small), "--split", "test",
            "--json", str(out_json))
    assert r.returncode == 0, r.stderr
    splits, _ = read_split(classifier_copy / "split.json")
    report = json.loads(out_json.read_text())
    assert report["split"] == "test" and report["n"] == len(splits["test"]) == 7
    # the same figures train.py measured on the held-out split right after training
    meta = json.loads((classifier_copy / "meta.json").read_text())
    assert report["balanced_accuracy"] == pytest.approx(meta["metrics"]["test"]["balanced_accuracy"])
    assert (classifier_copy / "evaluation-test.html").is_file()  # default report location


def test_evaluate_segmenter(tiny_segmenter_dir, ham_small, tmp_path):
    out_json, out_html = tmp_path / "seg.json", tmp_path / "seg.html"
    r = run("-m", "model.cli.evaluate", str(tiny_segmenter_dir), "--data", str(ham_small), "--split", "all",
            "--json", str(out_json), "--html", str(out_html))
    assert r.returncode == 0, r.stderr
    report = json.loads(out_json.read_text())
    assert report["n"] == 42 and len(report["per_image_dice"]) == 42
    assert 0 <= report["mean_dice"] <= 1 and 0 <= report["thresholded_jaccard"] <= report["mean_iou"] + 1e-9
    assert "Per-image Dice" in out_html.read_text()


def test_evaluate_missing_bundle_is_a_one_line_error(ham_small, tmp_path):
    r = run("-m", "model.cli.evaluate", str(tmp_path / "no-bundle"), "--data", str(ham_small), "--split", "all")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "no-bundle" in lines[0]
    assert "Traceback" not in r.stderr


def test_evaluate_missing_data_and_missing_split(classifier_copy, ham_small, tmp_path, capsys):
    """Same main() as the CLI, in-process (starting Python again costs seconds per call)."""
    from model.cli.evaluate import main

    assert main([str(classifier_copy), "--data", str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Data folder not found") and len(err.strip().splitlines()) == 1
    (classifier_copy / "split.json").unlink()
    assert main([str(classifier_copy), "--data", str(ham_small), "--split", "test"]) == 2
    assert "--split all" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(classifier_copy), "--data", str(ham_small), "--split", "holdout"])
    assert exc.value.code == 2


def test_train_cli_usage_errors(capsys):
    import train

    with pytest.raises(SystemExit) as exc:
        train.parse_args(["classify", "--out", "somewhere"])  # --data missing
    assert exc.value.code == 2 and "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train.parse_args(["detect", "--data", "d", "--out", "o"])
    assert exc.value.code == 2
    args = train.parse_args(["segment", "--data", "d", "--out", "o", "--img-size", "64", "96"])
    assert args.img_size == [64, 96] and args.epochs == 30 and not args.resume
