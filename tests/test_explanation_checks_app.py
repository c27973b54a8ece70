"""Issue 25 on the model card: the randomisation curves, ROAD beside its baselines with wording that
follows the paired intervals, and the stress-test table, all read from meta.json."""
from __future__ import annotations

import json
import shutil

from app_fixtures import app_models_dir, card_tab, fake_segmenter, make_app, no_exception, texts  # noqa: F401


def _row(method, baseline, lo, hi, n=50):
    return {"method": method, "layer": "L", "baseline": baseline, "difference": (lo + hi) / 2, "ci": [lo, hi], "n": n}


def _checks(split_size: int) -> dict:
    depths = ["head", "stage.2", "stage.1", "stem"]
    return {
        "sanity": {"gradcam": {"L": [0.9, 0.3, 0.1, 0.0]}, "eigencam": {"L": [0.95, 0.9, 0.8, 0.7]},
                   "depths": depths, "fail_depth": 3, "fail_correlation": 0.5, "failing": [["eigencam", "L"]],
                   "n": 200, "seed": 0, "split": "test", "command": "python -m model.cli.explanation_checks X"},
        "stress_test": {"ink": {"flip_rate": 0.193, "delta_mel": 0.0168, "delta_mel_ci": [0.0112, 0.0219],
                                "delta_bacc": -0.0334, "n": 1279}, "command": "python -m model.cli.explanation_checks Y"},
        "faithfulness": {"split": "test", "split_size": split_size, "rows": [
            {"method": "gradcam", "layer": "L", "n": 50, "road": 0.16, "morf": -0.4, "lerf": -0.1, "road_sem": 0.01},
            {"method": "eigencam", "layer": "L", "n": 50, "road": 0.06, "morf": -0.3, "lerf": -0.2, "road_sem": 0.01}],
            "baselines": {b: {"road": r, "n": 50} for b, r in (("centre", 0.08), ("lesion_mask", 0.1), ("random", 0.0))},
            "versus_baselines": {"rows": [_row("gradcam", "centre", 0.05, 0.1), _row("gradcam", "lesion_mask", 0.01, 0.09),
                                          _row("gradcam", "random", 0.1, 0.2), _row("eigencam", "centre", -0.05, -0.01),
                                          _row("eigencam", "lesion_mask", -0.08, -0.02),
                                          _row("eigencam", "random", -0.01, 0.1)],
                                 "interval": "paired percentile bootstrap 95% (images resampled)",
                                 "command": "python -m model.cli.explanation_checks Z"}}}


def test_card_shows_the_checks_and_words_follow_the_intervals(make_app, app_models_dir, tmp_path):  # noqa: F811
    shutil.copytree(app_models_dir / "classifier", tmp_path / "classifier")
    path = tmp_path / "classifier" / "meta.json"
    meta = json.loads(path.read_text())
    meta["interpretability"] = _checks(split_size=50)
    path.write_text(json.dumps(meta))
    at = card_tab(make_app(models=tmp_path, page="card/page.py"), "Heatmaps")
    shown = texts(at)
    assert "More faithful than the baselines:** Grad-CAM at `L`" in shown
    assert "A baseline wins" in shown and "EigenCAM at `L`" in shown
    assert "fails the randomisation check: EigenCAM at `L`" in shown
    assert "cover 50 of the" not in shown
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Randomisation check" in t for t in titles)
    stress = next(d.value for d in at.table if "what-if" in d.value.columns)
    assert list(stress["what-if"]) == ["surgical ink marking"] and "+0.017" in stress["Δ P(melanoma)"][0]
    verdicts = next(d.value for d in at.table if "verdict" in d.value.columns)
    assert list(verdicts["verdict"])[list(verdicts["method"]).index("Grad-CAM")] == "more faithful than the baselines"
    assert any("centred blob and the blurred lesion mask" in v for v in verdicts["verdict"])
    for cmd in ("X", "Y", "Z"):
        assert f"python -m model.cli.explanation_checks {cmd}" in shown


def test_card_says_when_the_baselines_cover_part_of_the_split(make_app, app_models_dir, tmp_path):  # noqa: F811
    shutil.copytree(app_models_dir / "classifier", tmp_path / "classifier")
    path = tmp_path / "classifier" / "meta.json"
    meta = json.loads(path.read_text())
    meta["interpretability"] = _checks(split_size=1279)
    path.write_text(json.dumps(meta))
    at = card_tab(make_app(models=tmp_path, page="card/page.py"), "Heatmaps")
    assert "cover 50 of the 1279 test images so far" in texts(at)


def test_analyse_labels_failing_heatmaps_and_runs_a_what_if(make_app, app_models_dir, tmp_path,  # noqa: F811
                                                            fake_segmenter):
    fake_segmenter("ellipse")
    shutil.copytree(app_models_dir / "classifier", tmp_path / "classifier")
    shutil.copytree(app_models_dir / "segmenter", tmp_path / "segmenter")
    path = tmp_path / "classifier" / "meta.json"
    meta = json.loads(path.read_text())
    at = make_app(models=tmp_path)
    layer = at.radio[0].set_value("Use an example").run().selectbox(key="cam_layer").value
    meta["interpretability"] = {"sanity": {"failing": [["gradcam", layer]], "depths": ["head"]}}
    path.write_text(json.dumps(meta))
    at = make_app(models=tmp_path)
    at.radio[0].set_value("Use an example").run()
    no_exception(at)
    assert any("Grad-CAM at `" + layer + "` fails the randomisation check" in w.value for w in at.warning)
    assert any("fails the randomisation check" in str(img.proto) for img in at.image)
    pick = at.button_group(key="whatif_pick")
    assert "lesion_only" in pick.options or any("lesion" in str(o) for o in pick.options)
    pick.set_value(["vignette"]).run()
    no_exception(at)
    shown = texts(at)
    assert "Dark vignette** — top class" in shown
    assert any("pts" in str(t.value) for t in at.table)
