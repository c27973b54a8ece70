"""The melanoma flag (threshold chosen on validation for a target sensitivity) and the share of
Grad-CAM heat inside the lesion, from their maths to train.py, evaluate, predict and the pipeline."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from model.aids.melanoma_flag import (choose_threshold, flag_config, flag_rates, is_flagged, raise_for_other_devices,
                                      restate_validation)


def test_threshold_is_the_highest_that_reaches_the_target_sensitivity():
    rng = np.random.default_rng(0)
    is_mel = np.r_[np.ones(50, bool), np.zeros(450, bool)]
    p = np.where(is_mel, rng.beta(5, 2, 500), rng.beta(2, 5, 500))
    cfg = choose_threshold(p, is_mel, 0.9)
    sens, spec = flag_rates(p, is_mel, cfg["threshold"])
    assert sens >= 0.9 and cfg["val_sensitivity"] == pytest.approx(sens, abs=1e-4)
    assert cfg["val_specificity"] == pytest.approx(spec, abs=1e-4)
    # any higher threshold (the next melanoma probability up) misses the target
    higher = np.sort(p[is_mel])[np.sort(p[is_mel]) > cfg["threshold"]][0]
    assert flag_rates(p, is_mel, higher)[0] < 0.9
    assert cfg["val_melanomas"] == 50


def test_raised_for_another_clinic_to_the_lowest_threshold_that_keeps_its_specificity():
    """Another dermatoscope shifts P(mel) up for benign lesions: the validation threshold flags most of
    them; the raised one is the lowest that leaves at least the asked share unflagged, never lower
    than the validation one, and the validation rates are restated at it."""
    rng = np.random.default_rng(1)
    val_mel = np.r_[np.ones(60, bool), np.zeros(540, bool)]
    p_val = np.where(val_mel, rng.beta(5, 2, 600), rng.beta(1.5, 8, 600))
    ext_mel = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    p_ext = np.where(ext_mel, rng.beta(8, 2, 200), rng.beta(5, 3, 200))   # benign lesions look more like melanoma
    cfg = choose_threshold(p_val, val_mel, 0.9)
    assert flag_rates(p_ext, ext_mel, cfg["threshold"])[1] < 0.6            # the validation threshold fails there
    raised = restate_validation(raise_for_other_devices(cfg, p_ext, ext_mel, 0.6, "elsewhere"), p_val, val_mel)
    sens, spec = flag_rates(p_ext, ext_mel, raised["threshold"])
    assert spec >= 0.6 and raised["external"]["specificity"] == pytest.approx(spec, abs=1e-4)
    assert raised["external"]["sensitivity"] == pytest.approx(sens, abs=1e-4)
    below = np.sort(p_ext[~ext_mel])[np.sort(p_ext[~ext_mel]) < raised["threshold"]][-1]
    assert flag_rates(p_ext, ext_mel, below)[1] < 0.6                      # any lower threshold misses it
    assert raised["validation_threshold"] == cfg["threshold"] < raised["threshold"]
    assert (raised["val_sensitivity"], raised["val_specificity"]) == pytest.approx(
        flag_rates(p_val, val_mel, raised["threshold"]), abs=1e-4)
    assert raised["external"]["at_validation_threshold"]["specificity"] < 0.6
    assert "raised" in raised["chosen_on"]
    # a clinic where the validation threshold already keeps the specificity leaves it where it was
    easy = raise_for_other_devices(cfg, np.where(ext_mel, 0.9, 0.01), ext_mel, 0.6, "elsewhere")
    assert easy["threshold"] == cfg["threshold"] and easy["chosen_on"] == cfg["chosen_on"]
    with pytest.raises(ValueError):
        raise_for_other_devices(cfg, p_ext[ext_mel], ext_mel[ext_mel], 0.6, "only melanomas")


def test_threshold_edge_cases():
    p, y = np.array([0.9, 0.2, 0.1]), np.array([True, False, False])
    assert choose_threshold(p, y, 0.9)["threshold"] == pytest.approx(0.9)
    assert choose_threshold(p, y, 0.9)["val_specificity"] == 1.0
    with pytest.raises(ValueError, match="No melanoma"):
        choose_threshold(p, np.zeros(3, bool))
    assert math.isnan(flag_rates(p, np.zeros(3, bool), 0.5)[0])


def test_flag_config_ignores_bundles_without_it_or_without_mel():
    classes = ["mel", "nv"]
    assert flag_config({"classes": classes}) is None
    assert flag_config({"classes": ["nv", "bcc"], "melanoma_flag": {"class": "mel", "threshold": 0.2}}) is None
    meta = {"classes": classes, "melanoma_flag": {"class": "mel", "threshold": 0.2}}
    assert is_flagged(meta, classes, np.array([0.2, 0.8])) is True
    assert is_flagged(meta, classes, np.array([0.19, 0.81])) is False
    assert is_flagged({"classes": classes}, classes, np.array([0.9, 0.1])) is None


def test_train_writes_the_flag_and_evaluate_reports_it_on_test(tiny_classifier_dir):
    meta = json.loads((tiny_classifier_dir / "meta.json").read_text())
    flag = meta["melanoma_flag"]
    assert flag["class"] == "mel" and flag["target_sensitivity"] == 0.9 and flag["val_sensitivity"] >= 0.9
    test = meta["metrics"]["test"]
    assert test["melanoma_flag_threshold"] == pytest.approx(flag["threshold"])
    assert 0 <= test["melanoma_flag_sensitivity"] <= 1 and 0 <= test["melanoma_flag_specificity"] <= 1


def test_flag_reaches_predict_and_the_pipeline(tiny_classifier_dir, ham_small, tmp_path):
    from model.nets.bundle import load_bundle, update_meta
    from model.inference.pipeline import Analyzer

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_classifier_dir, bundle_dir)
    image = next((ham_small / "images").glob("*.jpg"))
    update_meta(bundle_dir, melanoma_flag={"class": "mel", "threshold": 0.0})  # everything flagged
    analyzer = Analyzer(load_bundle(bundle_dir))
    assert analyzer.analyze(image.read_bytes()).melanoma_flag is True
    assert analyzer.classify_many([("a", image.read_bytes())])[0].melanoma_flag is True
    update_meta(bundle_dir, melanoma_flag={"class": "mel", "threshold": 1.01})  # nothing flagged
    a = Analyzer(load_bundle(bundle_dir)).analyze(image.read_bytes())
    assert a.melanoma_flag is False and a.melanoma_threshold == pytest.approx(1.01)


def test_predict_cli_prints_the_flag(tiny_classifier_dir, ham_small, capsys):
    from model.cli.predict import main

    image = next((ham_small / "images").glob("*.jpg"))
    assert main([str(tiny_classifier_dir), str(image)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert isinstance(line["melanoma_flag"], bool)


def test_melanoma_flag_cli_rechooses_on_validation(tiny_classifier_dir, ham_small, tmp_path, capsys):
    from model.cli.melanoma_flag import main

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_classifier_dir, bundle_dir)
    meta = json.loads((bundle_dir / "meta.json").read_text())
    del meta["melanoma_flag"]
    (bundle_dir / "meta.json").write_text(json.dumps(meta))
    assert main([str(bundle_dir), "--data", str(ham_small), "--target", "0.95"]) == 0
    flag = json.loads((bundle_dir / "meta.json").read_text())["melanoma_flag"]
    assert flag["target_sensitivity"] == 0.95 and flag["val_sensitivity"] >= 0.95
    assert main([str(tmp_path / "nothing"), "--data", str(ham_small)]) == 2
    assert "error:" in capsys.readouterr().err


def test_melanoma_flag_cli_keeps_the_specificity_on_another_clinics_select_part(tiny_classifier_dir, ham_small,
                                                                                tiny_derm7pt, tmp_path, capsys):
    from model.cli.melanoma_flag import main

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_classifier_dir, bundle_dir)
    assert main([str(bundle_dir), "--data", str(ham_small), "--external", str(tiny_derm7pt),
                 "--min-specificity", "0.9"]) == 0
    flag = json.loads((bundle_dir / "meta.json").read_text())["melanoma_flag"]
    ext = flag["external"]
    assert ext["specificity"] >= 0.9 and flag["threshold"] >= flag["validation_threshold"]
    assert ext["melanomas"] + ext["others"] == sum(1 for line in (tiny_derm7pt / "metadata.csv").open()
                                                   if ",select," in line)
    assert "--external" in flag["command"] and "d7 select" in ext["where"]
    assert "on d7 select" in capsys.readouterr().out


def test_heat_in_lesion_measures_and_records_both_classifiers(tiny_classifier_dir, ham_small, tmp_path):
    from model.cli.heat_in_lesion import main

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_classifier_dir, bundle_dir)
    assert main([str(bundle_dir), "--data", str(ham_small), "--split", "all", "--previous",
                 str(tiny_classifier_dir)]) == 0
    focus = json.loads((bundle_dir / "meta.json").read_text())["interpretability"]["gradcam_in_lesion"]
    assert set(focus) == {"shipped", "previous"}
    for v in focus.values():
        assert 0 <= v["mean_share"] <= 1 and 0 <= v["share_of_images_under_50pct"] <= 1
        assert v["n"] + v["skipped"] == 42 and v["n"] > 30
    assert focus["shipped"]["mean_share"] == focus["previous"]["mean_share"]  # same weights, same figure


def test_heat_in_lesion_follows_the_heat():
    """A model whose heat sits on the mask scores near 1; the same heat outside it near 0."""
    from model.explain.attention import attention_on_lesion

    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    heat = mask.astype(np.float32)
    assert attention_on_lesion(heat, mask) == pytest.approx(1.0)
    assert attention_on_lesion(1 - heat, mask) == pytest.approx(0.0)


def test_evaluate_record_writes_the_flag_figures_into_meta(tiny_classifier_dir, ham_small, tmp_path):
    """An older bundle gets its flag (model.aids.melanoma_flag) and then its test figures (--record)."""
    from model.cli.evaluate import main as evaluate
    from model.cli.melanoma_flag import main as choose

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_classifier_dir, bundle_dir)
    meta = json.loads((bundle_dir / "meta.json").read_text())
    del meta["melanoma_flag"]
    meta["metrics"]["test"] = {k: v for k, v in meta["metrics"]["test"].items() if "flag" not in k}
    (bundle_dir / "meta.json").write_text(json.dumps(meta))
    assert choose([str(bundle_dir), "--data", str(ham_small)]) == 0
    assert evaluate([str(bundle_dir), "--data", str(ham_small), "--record", "--html", str(tmp_path / "r.html")]) == 0
    after = json.loads((bundle_dir / "meta.json").read_text())
    assert "melanoma_flag_sensitivity" in after["metrics"]["test"]
    assert after["metrics"]["best_val"] == meta["metrics"]["best_val"]  # the rest of metrics kept
