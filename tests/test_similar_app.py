"""Similar cases and prediction sets where users meet them: predict's JSON lines, the Analyse page
(with the sidebar's coverage), Batch review's columns and exports, the model card."""
from __future__ import annotations

import json
import shutil

from safetensors.numpy import load_file, save_file

from app_fixtures import SMALL, app_models_dir, card_tab, make_app, no_exception, texts  # noqa: F401


def _example(at, index: int = 0):
    at.radio[0].set_value("Use an example").run()
    if index:
        at.selectbox(key="example").set_value(index).run()
    return at


def test_predict_writes_the_set_and_the_neighbours(tiny_classifier_dir, ham_small, capsys):
    from model.cli.predict import main

    images = sorted((ham_small / "images").glob("*.jpg"))[:2]
    assert main([str(tiny_classifier_dir), *map(str, images), "--coverage", "95"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    classes = json.loads((tiny_classifier_dir / "meta.json").read_text())["classes"]
    for line in lines:
        assert isinstance(line["prediction_set"], list) and set(line["prediction_set"]) <= set(classes)
        assert len(line["similar"]) == 6
        assert {"image_id", "diagnosis", "similarity"} <= set(line["similar"][0])
        sims = [n["similarity"] for n in line["similar"]]
        assert sims == sorted(sims, reverse=True)
        assert line["knn_vote"] in classes


def test_analyse_shows_the_set_and_similar_cases_and_follows_the_slider(make_app):
    at = _example(make_app())
    no_exception(at)
    shown = texts(at)
    assert "Prediction set at 90%" in shown
    assert "90% of the time for each class on its own (melanoma: 95%)" in shown   # melanoma calibrated stricter
    assert "Similar confirmed cases" in shown and "kNN vote of the 6 most similar training cases" in shown
    assert shown.count("similarity 0.") + shown.count("similarity 1.") + shown.count("similarity -") >= 6
    assert sum(b.label == "Enlarge" for b in at.button) == 6
    at.slider(key="coverage").set_value(99).run()
    no_exception(at)
    assert "Prediction set at 99%" in texts(at) and "(melanoma: " not in texts(at)
    next(b for b in at.button if b.label == "Enlarge").click().run()
    no_exception(at)


def test_analyse_explains_a_reference_set_made_for_other_weights(make_app, app_models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(app_models_dir, models)
    weights = models / "classifier" / "weights.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.dtype.kind == "f")
    state[name] = state[name] * 1.01
    save_file(state, str(weights))
    at = _example(make_app(models))
    no_exception(at)
    errors = " ".join(str(e.value) for e in at.error)
    assert "other weights" in errors and "python -m model.cli.similar build" in errors
    assert not any(b.label == "Enlarge" for b in at.button)


def test_batch_has_set_column_coverage_and_both_exports(make_app):
    from app.batch.aids import json_export  # noqa: F401  (the page's export)

    at = make_app(page="batch/page.py")
    images = [(p.name, p.read_bytes(), "image/jpeg") for p in sorted((SMALL / "images").glob("*.jpg"))[:8]]
    at.file_uploader(key="batch_files").set_value(images)
    at.file_uploader(key="batch_labels").set_value(("metadata.csv", (SMALL / "metadata.csv").read_bytes(), "text/csv"))
    at.run()
    no_exception(at)
    table = at.dataframe(key="batch_table").value
    assert {"prediction set", "set size", "kNN vote", "label", "label in set"} <= set(table.columns)
    assert table["prediction set"].str.len().gt(0).all()
    assert "Prediction-set coverage (target 90%)" in texts(at)
    labels = {d.label for d in at.get("download_button")}
    assert {"Download table (CSV)", "Download table (JSON)"} <= labels


def test_batch_exports_carry_sets_and_coverage():
    import numpy as np
    import pandas as pd

    from app.batch.aids import add_set_columns, json_export, set_coverage
    from app.widgets.tables import results_frame
    from model.inference.results import BatchPrediction

    classes = ["mel", "nv"]
    preds = [BatchPrediction(f"{n}.jpg", np.array([0.3, 0.7]), "nv", 0.7, 0.3, 0.9, [],
                             prediction_sets={90: s}) for n, s in (("a", ["nv"]), ("b", ["nv", "mel"]), ("c", ["nv"]))]
    labels = {"a": "nv", "b": "mel", "c": "mel"}
    df = add_set_columns(results_frame(preds, classes), preds, 90, labels)
    assert df["prediction set"].tolist() == ["nv", "nv mel", "nv"]
    assert df["label in set"].tolist() == ["yes", "yes", "no"]
    summary = set_coverage(preds, labels, classes, 90)
    assert summary["coverage"] == 2 / 3 and summary["per_class"]["mel"]["coverage"] == 0.5
    assert summary["singleton_share"] == 2 / 3
    doc = json.loads(json_export(df, 90, summary))
    assert doc["coverage_target"] == 0.9 and doc["set_coverage_on_labels"]["n"] == 3
    assert doc["images"][1]["prediction set"] == ["nv", "mel"]
    from app.widgets.csv_export import safe_csv

    assert "prediction set" in safe_csv(df).splitlines()[0]
    assert isinstance(df, pd.DataFrame)


def test_model_card_shows_knn_and_conformal_figures(make_app):
    at = card_tab(make_app(page="card/page.py"), "Prediction sets and similar cases")
    shown = texts(at)
    assert "Prediction sets and similar cases" in shown
    assert "kNN vote balanced accuracy (k=6)" in shown and "Softmax balanced accuracy" in shown
    assert "Prediction sets:" in shown and "mondrian split conformal" in shown
    assert "Melanoma is calibrated 5 points stricter than the stated coverage (at 90%, its threshold is its 95% one)" in shown
    frames = [d.value for d in at.table]
    assert any("coverage (test)" in f.columns for f in frames)
    assert any(any(c.startswith("precision at") for c in f.columns) for f in frames)
