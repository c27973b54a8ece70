"""Issues 26.2-26.4 on the pages (Streamlit AppTest, tiny bundles): the heat warning against each
method's own measured limit and what it means, heat on artefacts beside heat on the lesion, and the
model card's figures for the heat warning, the artefact detector and the colour rules."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from app_fixtures import app_models_dir, card_tab, fake_segmenter, make_app, no_exception, texts  # noqa: F401

INK = Path(__file__).resolve().parent / "data" / "labelled" / "images" / "ISIC_0030006.jpg"


def _models_with(tmp_path: Path, app_models_dir: Path, **fields) -> Path:
    shutil.copytree(app_models_dir, tmp_path / "models")
    path = tmp_path / "models" / "classifier" / "meta.json"
    meta = json.loads(path.read_text())
    for key, value in fields.items():
        if key == "heat_warning":
            meta.setdefault("interpretability", {})["heat_warning"] = value
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))
    return tmp_path / "models"


def _upload(at):
    """Upload the ink image; the tiny test model's gate may hide its output: open it, as a clinician can."""
    from app.analyse.sections import REVEAL_LABEL
    at.file_uploader(key="upload").set_value((INK.name, INK.read_bytes(), "image/jpeg")).run()
    reveal = [t for t in at.toggle if t.label == REVEAL_LABEL]
    if reveal:
        reveal[0].set_value(True).run()
    no_exception(at)
    return at


def test_warning_follows_the_measured_limit_and_says_what_it_means(make_app, app_models_dir, fake_segmenter, tmp_path):
    fake_segmenter("ellipse")
    models = _models_with(tmp_path, app_models_dir, heat_warning={
        "off_lesion_limit": {"gradcam": 0.0}, "per_method": {"gradcam": {"n": 10}}})
    shown = texts(_upload(make_app(models=models)))
    assert "More of the heat lies off the lesion than usual for this method (Grad-CAM:" in shown
    assert "9 in 10 test images" in shown and "does not say the answer is wrong" in shown
    assert "Less than 50% of the heat" not in shown                      # the old fixed threshold is gone


def test_no_warning_without_a_measured_limit(make_app, fake_segmenter):
    fake_segmenter("ellipse")
    at = _upload(make_app())
    shown = texts(at)
    assert "More of the heat lies off the lesion" not in shown
    assert "No heat warning for Grad-CAM" in shown and "model.cli.heat_warning" in shown
    assert any("of heat on lesion" in str(img.proto) for img in at.image)


def test_card_shows_heat_warning_and_rule_agreement(make_app, app_models_dir, tmp_path):
    from model.evaluation.label_agreement import artefact_agreement, colour_agreement, load_labelled

    cases = load_labelled(INK.parents[1])
    models = _models_with(tmp_path, app_models_dir, heat_warning={
        "layer": "blocks.6", "split": "test", "command": "python -m model.cli.heat_warning X --data Y",
        "off_lesion_limit": {"gradcam": 0.855},
        "per_method": {"gradcam": {"n": 1279, "off_lesion_median": 0.59, "off_lesion_p90": 0.855,
                                   "artefacts_mean": 0.004, "images_with_heat_on_artefacts_over_10pct": 0.01}}},
        rule_agreement={"artefacts": artefact_agreement(cases), "colours": colour_agreement(cases),
                        "n_images": len(cases), "n_colour_labelled": 77, "labels": "tests/data/labelled",
                        "labels_sha256": "0" * 16, "command": "python -m model.cli.label_agreement B",
                        "derm7pt": {"n": 489, "parts": {"report": {
                            "white": {"n": 489, "labelled_present": 62, "said_present": 121, "sensitivity": 0.339,
                                      "specificity": 0.787, "balanced_accuracy": 0.563}}}}})
    at = card_tab(make_app(models=models, page="card/page.py"), "Heatmaps")
    shown, frames = texts(at), [f.value for f in at.table]
    at = card_tab(at, "Artefacts and colours")
    shown, frames = shown + texts(at), frames + [f.value for f in at.table]
    assert "Artefacts and dermoscopic colours" in shown and "The heat warning." in shown
    assert any("warns above (90th percentile)" in f.columns and "85.5%" in f.values.ravel().tolist() for f in frames)
    assert any("colour" in f.columns and "balanced accuracy" in f.columns and "white" in list(f["colour"]) for f in frames)
    assert any("artefact" in f.columns and "recall" in f.columns and "ruler" in list(f["artefact"]) for f in frames)
    assert "Against dermatologists' labels from another clinic" in shown
    assert any("said present" in f.columns and list(f["labelled present"]) == ["62 of 489"]
               and list(f["balanced accuracy"]) == ["0.56"] for f in frames)
