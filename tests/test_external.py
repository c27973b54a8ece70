"""Other dermatoscopes and the gate: an external set split into parts (Derm7pt's layout), scored
through the app's path; the gate's thresholds chosen on a joint budget; the not-dermoscopy set;
the paired full-resolution table; the model card's rows."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.data.dataset import load_dataset
from model.evaluation.gate_check import calibrate, flagged, thresholds_at

REPO = Path(__file__).resolve().parents[1]
NOT_DERMOSCOPY = REPO / "tests" / "data" / "not-dermoscopy"


def parted_copy(ham_small: Path, out: Path) -> Path:
    """ham_small in Derm7pt's layout: metadata.csv (image_id, dx, part, criteria), images/; two rows
    without a HAM10000 class."""
    (out / "images").mkdir(parents=True)
    rows = list(csv.DictReader((ham_small / "metadata.csv").open()))
    with (out / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "dx", "part", "diagnosis", "pigment_network"])
        for i, r in enumerate(rows):
            shutil.copy(ham_small / "images" / f"{r['image_id']}.jpg", out / "images")
            w.writerow([r["image_id"], "" if i < 2 else r["dx"], "report" if i % 2 else "select", r["dx"], "absent"])
    return out


def test_a_set_with_parts_is_read_with_its_parts_and_classless_rows_skipped(tmp_path, ham_small):
    ds = load_dataset(parted_copy(ham_small, tmp_path / "d7"))
    assert ds.layout == "images+metadata with parts"
    assert len(ds.records) == 40 and {r.part for r in ds.records} == {"select", "report"}
    assert [why for _, why in ds.problems] == ["no HAM10000 class (dx empty)"] * 2


def test_evaluate_scores_the_report_part_through_the_app_path_and_records_it(tmp_path, ham_small,
                                                                            tiny_classifier_dir):
    data = parted_copy(ham_small, tmp_path / "d7")
    bundle = tmp_path / "cls"
    shutil.copytree(tiny_classifier_dir, bundle, ignore=shutil.ignore_patterns(".train"))
    r = subprocess.run([sys.executable, "-m", "model.cli.evaluate", str(bundle), "--data", str(data), "--record",
                        "--name", "d7_report"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "balanced_accuracy" in r.stdout and "gate" in r.stdout
    rep = json.loads((bundle / "meta.json").read_text())["metrics"]["external"]["d7_report"]
    assert rep["part"] == "report" and rep["n"] == 20
    assert set(rep) >= {"balanced_accuracy", "melanoma_auc", "melanoma_flag_sensitivity", "gate", "sets"}
    assert rep["gate"]["flagged"] + 0 <= rep["n"]
    wrong = subprocess.run([sys.executable, "-m", "model.cli.evaluate", str(bundle), "--data", str(data),
                            "--split", "test"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "use --split report" in wrong.stderr


# ----------------------------------------------------------------------------- the gate
def synthetic_scores(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ood": rng.gamma(9, 3, n), "colour": rng.gamma(4, 1, n), "sharpness": rng.lognormal(4, 0.5, n),
            "grayscale": np.zeros(n), "min_side": np.full(n, 450.0)}


@pytest.mark.parametrize("budget", [0.01, 0.02, 0.05])
def test_the_joint_budget_holds_on_the_images_it_was_chosen_on(budget):
    val = synthetic_scores(2000, 0)
    th, tail = calibrate(val, budget)
    assert flagged(val, th).mean() <= budget
    assert flagged(val, thresholds_at(val, budget)).mean() > budget  # each check at the whole budget overshoots
    assert budget / 4 <= tail <= budget  # three checks share it


def test_grayscale_and_tiny_images_are_always_flagged():
    s = synthetic_scores(4, 1)
    s["grayscale"][0], s["min_side"][1] = 1, 40
    f = flagged(s, {"ood_threshold": None, "colour_threshold": None, "sharpness_p01": None})
    assert f.tolist() == [True, True, False, False]


def test_the_gate_flags_images_that_are_not_dermoscopy():
    """The committed set (python -m tools.not_dermoscopy): at least 95% flagged by the shipped gate."""
    from model.inference.results import gated
    from model.inference.pipeline import Analyzer
    from model.nets.bundle import load_bundle

    files = sorted(NOT_DERMOSCOPY.iterdir())
    assert len(files) == 48
    preds = Analyzer(load_bundle(REPO / "assets" / "models" / "classifier")).classify_many(
        [(p.name, p.read_bytes()) for p in files])
    caught = [gated(p.flags) for p in preds]
    assert np.mean(caught) >= 0.95, [p.name for p, c in zip(preds, caught) if not c]


def test_the_not_dermoscopy_set_is_what_its_script_makes(tmp_path):
    from tools.not_dermoscopy import make

    made = make(tmp_path / "nd")
    assert sorted(p.name for p in made) == sorted(p.name for p in NOT_DERMOSCOPY.iterdir())
    for p in made[::7]:
        assert p.read_bytes() == (NOT_DERMOSCOPY / p.name).read_bytes()


# ----------------------------------------------------------------------------- the card
def test_card_rows_read_the_recorded_figures():
    from app.card.external import external_rows, input_path_rows

    rep = {"n": 489, "classes_present": ["bcc", "mel"], "balanced_accuracy": 0.6, "melanoma_auc": 0.8,
           "melanoma_top_class_sensitivity": 0.5, "melanoma_flag_sensitivity": 0.75, "melanoma_flag_specificity": 0.6,
           "sets": {"coverage_level": 90, "coverage": 0.9, "mean_set_size": 2.2},
           "gate": {"flagged": 10, "flag_rate": 0.02, "error_rate_flagged": 0.6, "error_rate_passed": 0.4}}
    rows = {r["measure"]: r["value"] for r in external_rows(rep)}
    assert rows["melanoma AUC"] == "0.800" and rows["melanoma flag: sensitivity / specificity"] == "0.750 / 0.600"
    assert rows["error rate of flagged / passed images"] == "60.0% / 40.0%"
    table = {"a": {"n": 75, "top_class_agrees": 74, "abs_dp_median": {"mel": 0.002}, "abs_dp_max": {"mel": 0.1},
                   "gated_full": 0, "gated_twin": 1}}
    assert input_path_rows(table, ["mel"])[0]["top class agrees"] == "74 of 75"


def test_input_paths_command_compares_candidates_on_pairs(tmp_path):
    fr = REPO / "tests" / "data" / "fullres"
    twins = tmp_path / "twins"
    (twins / "images").mkdir(parents=True)
    for p in (fr / "twins").iterdir():
        shutil.copy(p, twins / "images")
    r = subprocess.run([sys.executable, "-m", "model.cli.input_paths", str(REPO / "assets" / "models" / "classifier"),
                        "--fullres", str(fr), "--twins", str(twins)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(l for l in r.stdout.splitlines() if "the training images' pipeline" in l)
    assert "| 3 of 3 |" in line
