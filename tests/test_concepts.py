"""Issue 24: the 7-point checklist learned by concept probes, measured, located and scored, on the tiny
bundles and ham_small's real images laid out like Derm7pt (conftest.derm7pt_copy)."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from app_fixtures import app_models_dir, card_tab, make_app, no_exception, texts  # noqa: F401
from conftest import derm7pt_copy, subprocess_env
from model.data.checklist import CRITERIA, NAMES, PRESENT_AT, WEIGHTS, readings, seven_point_score
from model.data.dataset import load_dataset
from model.explain.concepts import ConceptError, load_probes
from model.inference.pipeline import Analyzer

REPO = Path(__file__).resolve().parents[1]
FULLRES = sorted((REPO / "tests" / "data" / "fullres" / "images").glob("*.jpg"))
SMALL = sorted((REPO / "tests" / "data" / "ham_small" / "images").glob("*.jpg"))


def test_derm7pt_records_carry_the_criteria_read_the_clinical_way(tmp_path):
    ds = load_dataset(derm7pt_copy(tmp_path / "d7"))
    mel = next(r for r in ds.records if r.label == "mel")
    assert dict(mel.criteria)["pigmentation"] == "diffuse irregular"
    assert readings(mel.criteria) == dict.fromkeys(NAMES, True)          # every criterion, as D7_VALUES gives mel
    nv = readings(next(r for r in ds.records if r.label == "nv").criteria)
    assert not any(nv.values())                                            # typical network, regular streaks/dots
    value = lambda col, v: readings([(c.column, v if c.column == col else "absent") for c in CRITERIA])  # noqa: E731
    assert value("pigmentation", "localized irregular")["irregular_pigmentation"]
    assert not value("pigmentation", "localized regular")["irregular_pigmentation"]
    assert value("regression_structures", "white areas")["regression_structures"]
    assert value("vascular_structures", "within regression")["atypical_vascular_pattern"]
    assert not value("vascular_structures", "arborizing")["atypical_vascular_pattern"]
    assert seven_point_score(readings(mel.criteria)) == 3 * 2 + 4 * 1


def test_older_layouts_still_load_without_criteria(ham_small, tmp_path):
    ds = load_dataset(ham_small)
    assert ds.records and all(r.criteria == () and readings(r.criteria) is None for r in ds.records)


def test_concepts_command_stores_report_figures_and_probes_tied_to_the_weights(concept_models_dir, tiny_derm7pt):
    bundle = concept_models_dir / "classifier"
    rec = json.loads((bundle / "meta.json").read_text())["interpretability"]["concepts"]
    report = [r for r in load_dataset(tiny_derm7pt).records if r.part == "report"]
    assert list(rec["criteria"]) == list(NAMES) and rec["weights"] == WEIGHTS
    for name, c in rec["criteria"].items():
        assert c["n_test"] == len(report) == 21
        assert c["positives"] == sum(readings(r.criteria)[name] for r in report)
        assert 0 <= c["auroc_ci"][0] <= c["auroc"] <= c["auroc_ci"][1] <= 1
    tcav = rec["tcav"]
    assert tcav["class"] == "mel" and tcav["random_concepts"] == 10 and tcav["n_images"] == 3
    assert all({"tcav", "random_tcav", "p", "p_bonferroni", "significant"} <= set(t) for t in tcav["criteria"].values())
    cmp_ = rec["checklist_vs_classifier"]
    assert {"probe_score", "dermatologist_score", "classifier_top_class", "agreement"} <= set(cmp_)
    assert cmp_["dermatologist_score"]["sensitivity"] == 1.0   # every mel scores 10 in D7_VALUES
    assert rec["command"].startswith("python -m model.cli.concepts")
    assert load_probes(bundle).weight.shape[0] == 7


def test_probes_are_fitted_on_select_alone(concept_models_dir, tiny_derm7pt, tmp_path):
    """Rewriting every report image's criteria changes the report figures, never the probes."""
    from model.cli.concepts import main

    data = tmp_path / "d7"
    shutil.copytree(tiny_derm7pt, data)
    rows = list(csv.reader((data / "metadata.csv").open()))
    for r in rows[1:]:
        if r[2] == "report":
            r[4:] = ["absent"] * 7
            r[9] = "present"                         # report: no criterion but the veil, on every image
    with (data / "metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    bundle = tmp_path / "classifier"
    shutil.copytree(concept_models_dir / "classifier", bundle)
    assert main([str(bundle), "--data", str(data), "--runs", "2", "--random", "10"]) == 0
    before, after = load_probes(concept_models_dir / "classifier"), load_probes(bundle)
    assert np.array_equal(before.weight, after.weight) and np.array_equal(before.bias, after.bias)
    rec = json.loads((bundle / "meta.json").read_text())["interpretability"]["concepts"]["criteria"]
    assert rec["blue_whitish_veil"]["positives"] == 21 and rec["atypical_pigment_network"]["positives"] == 0


def test_analyzer_reads_the_checklist_and_each_map_is_the_probe_at_every_position(concept_models_dir):
    an = Analyzer.from_dir(concept_models_dir)
    probes = load_probes(concept_models_dir / "classifier")
    for path in FULLRES[:2]:
        a = an.analyze(path.read_bytes(), cam_methods=("gradcam",))
        c = a.checklist
        assert c is not None and a.checklist_error is None and "checklist" in a.timings_ms
        assert c.names == list(NAMES) and c.maps.shape[0] == 7 and c.maps.ndim == 3
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        # the pooled features are the mean of the last map, so each map's mean logit is the image's
        assert np.allclose(logit(np.clip(c.maps, 1e-6, 1 - 1e-6)).mean(axis=(1, 2)), logit(c.presence), atol=1e-3)
        assert c.score == sum(WEIGHTS[n] for n, p in zip(NAMES, c.presence) if p >= PRESENT_AT)
        assert c.present == [bool(p >= PRESENT_AT) for p in c.presence]
        assert c.suggests_melanoma == (c.score >= 3)
        headless = an.checklist.reading(np.zeros(probes.weight.shape[1], np.float32), np.zeros((3, 2, 2), np.float32))
        assert headless.maps is None and headless.presence.shape == (7,)   # a map of other channels: no maps
        other = an.analyze(path.read_bytes(), cam_methods=("gradcam",), cam_layer=an.layers[0])  # the torch path
        assert np.allclose(other.checklist.maps, c.maps, atol=1e-4)
        direct = probes.presence(an.classifier.model.forward_head(an.classifier.model.forward_features(
            torch.from_numpy(np.zeros((1, 3, *an.classifier.input_size), np.float32))), pre_logits=True).detach().numpy())
        assert direct.shape == (1, 7)


def test_a_bundle_without_probes_or_with_another_classifiers_probes_says_what_to_run(concept_models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(concept_models_dir, models)
    probes = models / "classifier" / "concepts.safetensors"
    weights = models / "classifier" / "weights.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01                      # other weights, same architecture
    save_file(state, str(weights))
    with pytest.raises(ConceptError, match="another classifier's weights.*model.cli.concepts"):
        load_probes(models / "classifier")
    (models / "classifier" / "model.onnx").unlink()        # tied to the old weights too
    a = Analyzer.from_dir(models).analyze(FULLRES[0].read_bytes())
    assert a.checklist is None and "another classifier" in a.checklist_error
    probes.unlink()
    a = Analyzer.from_dir(models).analyze(FULLRES[0].read_bytes())
    assert a.checklist is None and "no 7-point concept probes" in a.checklist_error
    assert "python -m model.cli.concepts" in a.checklist_error


def test_predict_jsonl_and_csv_carry_concepts_and_the_score(concept_models_dir, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for p in SMALL[:3]:
        shutil.copy(p, images)
    run = lambda fmt: subprocess.run([sys.executable, "-m", "model.cli.predict", str(concept_models_dir),  # noqa: E731
                                      str(images), "--format", fmt], cwd=REPO, capture_output=True, text=True,
                                     env=subprocess_env(), timeout=600)
    out = run("jsonl")
    assert out.returncode == 0, out.stderr[-2000:]
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(recs) == 3
    for r in recs:
        assert list(r["concepts"]) == list(NAMES) and all(0 <= v <= 1 for v in r["concepts"].values())
        assert r["seven_point_score"] == seven_point_score({n: v >= PRESENT_AT for n, v in r["concepts"].items()})
    rows = list(csv.DictReader(io.StringIO(run("csv").stdout)))
    assert len(rows) == 3 and int(rows[0]["seven_point_score"]) == recs[0]["seven_point_score"]
    assert float(rows[0]["concept_blue_whitish_veil"]) == pytest.approx(recs[0]["concepts"]["blue_whitish_veil"])


def test_batch_review_gets_the_score_and_criteria_columns(concept_models_dir, tiny_models_dir):
    from app.widgets.tables import results_frame

    an = Analyzer.from_dir(concept_models_dir)
    preds = an.classify_many([(p.name, p.read_bytes()) for p in SMALL[:4]] + [("bad.jpg", b"not an image")])
    single = an.analyze(SMALL[0].read_bytes())
    assert preds[0].concepts == pytest.approx(single.checklist.as_dict(), abs=1e-4)
    assert preds[0].seven_point_score == single.checklist.score
    df = results_frame(preds, an.classes)
    assert df["7-point score"].tolist()[:4] == [p.seven_point_score for p in preds[:4]]
    assert df["Blue-whitish veil"].iloc[0] == pytest.approx(preds[0].concepts["blue_whitish_veil"])
    assert preds[-1].concepts is None
    plain = Analyzer.from_dir(tiny_models_dir).classify_many([(SMALL[0].name, SMALL[0].read_bytes())])
    assert plain[0].concepts is None and plain[0].seven_point_score is None


def test_panel_greys_unreliable_criteria_and_the_report_shows_every_map(concept_models_dir):
    from app.analyse.case_report import build_case_report
    from app.analyse.checklist import checklist_seen, row_markdown, rows

    a = Analyzer.from_dir(concept_models_dir).analyze(FULLRES[0].read_bytes())
    c = a.checklist
    c.auroc[0], c.reliable[0] = 0.65, False
    c.auroc[1], c.reliable[1] = 0.91, True
    r = rows(c)
    assert "unreliable" in row_markdown(r[0]) and row_markdown(r[0]).startswith(":gray[")
    assert "unreliable" not in row_markdown(r[1]) and "0.91" in row_markdown(r[1])
    html = build_case_report(a, file_name="x.jpg", image_sha256="0" * 64, cams={}, cam_class="mel",
                             cam_layer="x", attention={}, method_labels={})
    assert "7-point checklist" in html and f"score from the probes: {c.score}" in html
    assert html.count("data:image/png;base64,") >= 1 + 7
    seen = checklist_seen(a, "blue_whitish_veil")
    assert seen.startswith(f"checklist: score {c.score}; map blue_whitish_veil") and len(seen) <= 100


def test_model_card_rows_say_which_criteria_the_features_do_not_carry():
    from app.card.checklist import criteria_rows, not_carried, rate_rows, tcav_rows

    rec = {"criteria": {"blue_whitish_veil": {"auroc": 0.88, "auroc_ci": [0.84, 0.91], "n_test": 489, "positives": 96},
                        "irregular_streaks": {"auroc": 0.64, "auroc_ci": [0.58, 0.70], "n_test": 489, "positives": 117}},
           "tcav": {"criteria": {"blue_whitish_veil": {"tcav": 1.0, "tcav_sd": 0, "random_tcav": 0.6, "random_sd": 0.3,
                                                       "p": 1e-5, "p_bonferroni": 7e-5, "significant": True}}},
           "checklist_vs_classifier": {"probe_score": {"sensitivity": 0.83, "specificity": 0.61}}}
    assert not_carried(rec) == ["Irregular streaks"]
    assert [r["carried by the features"][:2] for r in criteria_rows(rec)] == ["ye", "no"]
    assert tcav_rows(rec)[0]["significant"] == "yes" and rate_rows(rec)[0]["sensitivity"] == "83.0%"


def test_a_study_may_offer_the_checklist_and_the_default_leaves_it_out(tmp_path):
    from review.store import AIDS, DEFAULT_AIDS, CaseIn, Store

    assert "checklist" in AIDS and "checklist" not in DEFAULT_AIDS
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    case = CaseIn(name="a.jpg", image_sha256="0" * 64, source="upload", truth="mel")
    study, _ = store.create_study("s", [case], classes=["mel", "nv"], aids=["checklist", "prediction_set"])
    assert store.study(study["id"])["aids"] == ["prediction_set", "checklist"]


def test_analyse_page_shows_the_panel_and_switches_the_criterion_map(make_app, concept_models_dir, tiny_models_dir):
    at = make_app(models=concept_models_dir)
    at.radio[0].set_value("Use an example").run()
    no_exception(at)
    shown = texts(at)
    assert "7-point score from the probes" in shown and "AUROC on Derm7pt report" in shown
    pick = at.selectbox(key="checklist_map")
    assert pick.options == [c.label for c in CRITERIA]
    caption = lambda: " ".join(str(img.proto) for img in at.image)  # noqa: E731
    assert "Atypical pigment network: " in caption() and "Blue-whitish veil: " not in caption()
    pick.set_value("blue_whitish_veil").run()
    no_exception(at)
    assert "Blue-whitish veil: " in caption() and "Atypical pigment network: " not in caption()
    plain = make_app(models=tiny_models_dir)
    plain.radio[0].set_value("Use an example").run()
    assert "no 7-point concept probes" in texts(plain) and "python -m model.cli.concepts" in texts(plain)


def test_model_card_shows_the_checklist_figures_and_their_command(make_app, concept_models_dir):
    at = card_tab(make_app(models=concept_models_dir, page="card/page.py"), "7-point checklist")
    shown = texts(at)
    assert "The 7-point checklist in the classifier's features" in shown
    assert "python -m model.cli.concepts" in shown and "Bonferroni" in shown
    assert "7-point score from the probes (≥ 3)" in " ".join(str(d.value) for d in at.table)


@pytest.mark.slow
def test_a_study_with_the_checklist_aid_shows_the_panel_and_records_what_was_seen(concept_models_dir, tmp_path,
                                                                                  monkeypatch):
    from review import Store
    from review_flow import after, blind, click, open_study, review_app

    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    at = review_app(concept_models_dir, url, monkeypatch)
    at.radio(key="review_mode").set_value("Create a study").run()
    at.text_input(key="rc_name").set_value("Checklist study")
    at.checkbox(key="rc_examples").check()
    at.multiselect(key="rc_aids").set_value(["checklist"])
    click(at, "Create study")
    code = at.code[0].value.strip()
    at.run()
    open_study(at, code, "Reader")
    blind(at, "nv")
    assert "7-point score from the probes" in texts(at)
    pick = next(s for s in at.selectbox if s.key and s.key.startswith("checklist_map"))
    pick.set_value("regression_structures").run()
    after(at, "mel")
    store = Store(url)
    read = store.reads(store.open_study(code)["id"])[0]
    assert len(read["aids_seen"]) == 1
    assert read["aids_seen"][0].startswith("checklist: score ") and "map regression_structures" in read["aids_seen"][0]


def test_train_fits_the_probes_when_given_derm7pt(tiny_derm7pt, tmp_path):
    from conftest import train_bundle

    out = train_bundle("classify", tmp_path / "cls", ["--limit", "28", "--derm7pt", str(tiny_derm7pt)])
    assert load_probes(out).weight.shape[0] == 7
    rec = json.loads((out / "meta.json").read_text())["interpretability"]["concepts"]
    assert rec["command"] == f"python -m model.cli.concepts {out} --data {tiny_derm7pt}"
