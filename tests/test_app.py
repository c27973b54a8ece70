"""The Analyse page in Streamlit's AppTest on the tiny bundles: examples, real uploads, odd files,
options, caching, and the no-model message."""
from __future__ import annotations

import pytest

from app_fixtures import (FULLRES, app_models_dir, fake_segmenter, make_app, no_exception, odd_files, page_text,  # noqa: F401
                          texts)

SECTIONS = ["Prediction set and similar confirmed cases", "Where the model looked",
            "What if…? Known confounders", "7-point checklist: what the model sees, in dermoscopic criteria",
            "Lesion outline and measurements",
            "Feature maps", "Details and report"]


def _example(at, index: int = 0):
    at.radio[0].set_value("Use an example").run()
    if index:
        at.selectbox(key="example").set_value(index).run()
    return at


def _reveal(at):
    """Open the model's output when the quality gate hid it (the tiny test model fails many images)."""
    for t in at.toggle:
        if t.label.startswith("Show the model's output anyway") and not t.value:
            t.set_value(True).run()
    return at


def test_example_renders_every_section(make_app, fake_segmenter):
    fake_segmenter("ellipse")
    at = _example(make_app())
    no_exception(at)
    assert not at.error
    assert [h.value for h in at.header] == SECTIONS
    assert at.get("plotly_chart"), "probability chart missing"
    assert len(at.image) >= 5  # image, heatmap, outline, feature-map grid, enlarged map
    measured = [t.value for t in at.table if "Measure" in t.value.columns]
    assert measured, "measurements table missing"
    assert measured[0]["Measure"].tolist()[:2] == ["Area", "Longest diameter"]
    assert any("of heat on lesion" in str(img.proto) for img in at.image)
    shown = texts(at)
    assert "The model's top class" in shown
    assert "Ground truth:" in shown and "Actinic keratosis" in shown
    assert "Malignant (sum)" in shown and "Uncertainty (entropy)" in shown
    assert "assume the seven classes are equally common" in shown  # beside the malignant sum, not only on the card
    captions = " ".join(str(img.proto) for img in at.image)
    # one colour map for heatmaps and feature maps, and the tiles say so (issue 26.12: they said "yellow")
    assert "yellow" not in captions + shown and captions.count("red = strong, blue = weak") >= 2
    assert "red = strong, blue = weak, the colours of the heatmaps above" in shown
    assert at.selectbox(key="fmap_layer").options
    assert at.expander and any(e.label == "Timings per stage" for e in at.expander)
    assert "Ran on: classification — ONNX Runtime" in shown and "CAMs — forward-only" in shown  # small print
    assert [d.label for d in at.get("download_button")] == ["Download case report (HTML)"]


def test_full_resolution_upload(make_app):
    at = make_app()
    path = FULLRES[0]
    at.file_uploader(key="upload").set_value((path.name, path.read_bytes(), "image/jpeg")).run()
    _reveal(at)
    no_exception(at)
    assert not at.error
    assert at.get("plotly_chart")
    assert [h.value for h in at.header] == SECTIONS
    from PIL import Image
    w, h = Image.open(path).size
    assert any(f"{path.name} · {w}×{h} px" in str(img.proto) for img in at.image)


def test_camera_photo(make_app):
    at = make_app()
    at.toggle(key="camera_on").set_value(True).run()
    assert not at.file_uploader  # the camera replaces the upload box
    at.camera_input(key="camera").set_value(("photo.jpg", FULLRES[1].read_bytes(), "image/jpeg")).run()
    no_exception(at)
    assert [h.value for h in at.header] == SECTIONS


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "huge"])
def test_unreadable_upload_shows_plain_error(make_app, kind):
    name, data = odd_files()[kind]
    at = make_app()
    at.file_uploader(key="upload").set_value((name, data, "application/octet-stream")).run()
    no_exception(at)
    assert len(at.error) == 1
    assert at.error[0].value.startswith("This file cannot be analysed:")
    assert "Traceback" not in at.error[0].value
    assert not at.header  # nothing pretends to be a result


@pytest.mark.parametrize("kind,expect", [
    ("one_pixel", "too small"),
    ("16bit", "16-bit grayscale image converted"),
    ("cmyk", "CMYK image converted"),
    ("rgba", "Transparency was flattened"),
    ("grayscale", "Grayscale image"),
])
def test_unusual_image_is_analysed_with_a_note(make_app, kind, expect):
    name, data = odd_files()[kind]
    at = make_app()
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    no_exception(at)
    assert not at.error
    assert expect in texts(at)
    assert [h.value for h in at.header] == SECTIONS


def test_exif_rotation_is_applied(make_app):
    name, data = odd_files()["exif_rotated"]  # stored 300x200, EXIF says rotate 90 degrees
    at = make_app()
    at.file_uploader(key="upload").set_value((name, data, "image/jpeg")).run()
    no_exception(at)
    assert any("200×300 px" in str(img.proto) for img in at.image)


def test_quality_gate_hides_probabilities(make_app):
    name, data = odd_files()["one_pixel"]
    at = make_app()
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    assert any("quality check failed" in w.value for w in at.warning)
    assert any(t.label.startswith("Show the model's output anyway") and not t.value for t in at.toggle)
    assert "No reliable answer for this image" in texts(at) and not at.get("plotly_chart")


def test_options_tta_methods_layer(make_app):
    at = _example(make_app(), 4)
    at.toggle(key="tta").set_value(True).run()
    no_exception(at)
    assert "Flipped views agreeing" in texts(at)
    methods = at.multiselect(key="cam_methods")
    methods.set_value(list(methods.options and ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam",
                                                "eigencam"])).run()
    at.selectbox(key="cam_layer").set_value(at.selectbox(key="cam_layer").options[0]).run()
    no_exception(at)
    captions = [str(img.proto) for img in at.image]
    for label in ("Grad-CAM", "Grad-CAM++", "HiResCAM", "XGrad-CAM", "LayerCAM", "EigenCAM"):
        assert any(label in c for c in captions), label
    cam_class = next(s for s in at.selectbox if s.label == "Explain the score of")
    cam_class.set_value("mel").run()
    no_exception(at)
    assert "most raised the score of **Melanoma**" in texts(at)


def test_display_settings_do_not_rerun_the_network(make_app, app_models_dir, monkeypatch):
    from app import resources

    at = _example(make_app(), 2)
    loaded = resources._load(str(app_models_dir), resources.model_key(app_models_dir))
    calls = []
    original = loaded.analyzer.analyze
    monkeypatch.setattr(loaded.analyzer, "analyze", lambda *a, **k: calls.append(k) or original(*a, **k))
    at.slider(key="opacity").set_value(0.8).run()
    at.radio(key="mask_view").set_value("Mask").run()
    at.selectbox(key="example").set_value(2).run()
    no_exception(at)
    assert calls == []
    at.toggle(key="tta").set_value(True).run()  # an option that changes the output does run it
    assert len(calls) == 1 and calls[0]["tta"] is True


def test_no_lesion_found_withholds_measurements(make_app, fake_segmenter):
    fake_segmenter("empty")
    at = _reveal(_example(make_app(), 1))
    no_exception(at)
    assert "found no clear lesion" in texts(at)
    assert not [t for t in at.table if "Measure" in t.value.columns]  # no measurements table
    assert any("no lesion to compare with" in str(img.proto) for img in at.image)


def test_no_model_explains_how_to_train(make_app, tmp_path):
    at = make_app(models=tmp_path)
    no_exception(at)
    assert any("No trained model found" in e.value for e in at.error)
    assert any("python train.py classify" in c.value for c in at.code)
    at.switch_page("card/page.py").run()
    no_exception(at)
    assert any("No trained model found" in e.value for e in at.error)


def _gated_upload(make_app):
    name, data = odd_files()["one_pixel"]  # too small: the quality gate always fails it
    at = make_app()
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    no_exception(at)
    return at


def test_a_hidden_answer_is_named_nowhere_until_opened(make_app):
    """Issue 26.1: with the gate failed, no part of the page (sets, kNN vote, CAM target, case report,
    the benign/malignant sentence, softmax, probability chart) names the top class until the clinician
    opens the output on purpose."""
    from app.analyse.case_report import REPORT_KEY
    from app.analyse.sections import REVEAL_LABEL
    from model.labels import display_name

    at = _gated_upload(make_app)
    hidden, report = page_text(at), at.session_state[REPORT_KEY]()
    reveal = next(t for t in at.toggle if t.label == REVEAL_LABEL)
    reveal.set_value(True).run()
    no_exception(at)
    top = next(m.value for m in at.markdown if m.value.startswith("### Top class (not reliable): "))
    top = top.removeprefix("### Top class (not reliable): ").split(" — ")[0]
    assert top in [display_name(c) for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")]
    for text in (hidden, report):
        assert top.lower() not in text.lower()
        for word in ("softmax", "Top class", "kNN vote", "Prediction set at", "Explain the score of " + top,
                     "although the top class", "plotly"):
            assert word.lower() not in text.lower(), word
    assert next(s for s in at.selectbox if s.label == "Explain the score of").value == next(
        c for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc") if display_name(c) == top)
    opened = page_text(at)
    assert "Prediction set at" in opened and "kNN vote" in opened and top in at.session_state[REPORT_KEY]()


def _lines(text: str) -> list[str]:
    return [x.strip().removeprefix("- ").replace("**", "").strip() for x in text.split("\n") if x.strip()]


def test_the_case_report_carries_everything_the_page_shows(make_app, fake_segmenter, monkeypatch, app_models_dir):
    """Issue 26.10: every section heading of the page is a heading of the report (so a panel added later
    must be added to the report too), and every warning and note, metric, the prediction set, the similar
    cases and their vote, the melanoma flag, the ROAD scores and the heat warning are in it."""
    import html
    import re

    from app.analyse.case_report import REPORT_KEY
    from app import resources

    fake_segmenter("ellipse")
    at = make_app()
    loaded = resources._load(str(app_models_dir), resources.model_key(app_models_dir))
    monkeypatch.setattr(loaded.analyzer, "heat_limits", {"gradcam": -1.0, "eigencam": -1.0})  # the warning shows
    at = _example(at, 7)
    at.multiselect(key="cam_methods").set_value(["gradcam", "eigencam"]).run()
    at.toggle(key="faith_on").set_value(True).run()   # ROAD is measured on request
    no_exception(at)
    report = html.unescape(re.sub(r"<[^>]+>", " ", at.session_state[REPORT_KEY]()))
    report = re.sub(r"\s+", " ", report)
    missing = [h.value for h in list(at.header) + list(at.subheader) if h.value not in report]
    assert not missing, f"sections on the page but not in the case report: {missing}"
    main = at.main  # the sidebar (model summary, disclaimer) is not part of the case
    said = [line for box in list(main.warning) + list(main.info) + list(main.error) for line in _lines(box.value)]
    said += [line for m in at.markdown for line in _lines(m.value) if line.startswith("kNN vote")]
    shown_set = next(m.value for m in at.markdown if m.value.startswith("**Prediction set at"))
    in_set = re.findall(r"-badge\[([^\]]+)\]", shown_set)
    assert in_set and re.search("Prediction set at 90%: " + ", ".join(f"{re.escape(c)} \\([a-z]+\\)" for c in in_set),
                                report)
    assert "The true diagnosis is in such a set 90% of the time for each class on its own (melanoma: 95%)" in report
    said += [line for c in at.caption for line in _lines(c.value) if "Melanoma flag" in line]
    said = [re.sub(r":[a-z]+-badge\[(?::material/[a-z_]+: )?([^\]]*)\]", r"\1", s) for s in said]
    said = [re.sub(r"\s+", " ", s) for s in said if s != "Ground truth:"]
    assert any("More of the heat lies off the lesion" in s for s in said) and any("kNN vote" in s for s in said)
    assert [s for s in said if s.replace("Ground truth: ", "") not in report] == []
    for m in at.metric:
        assert m.value in report, m.label
    road = [v for df in at.table for v in df.value.get("ROAD (higher = more faithful)", [])]
    assert len(road) == 2 and all(v in report for v in road)



def test_kept_display_choices_log_no_widget_warning(make_app):
    """keep_choices sets the display widgets through the Session State API; a default passed beside
    that made Streamlit log a warning with a stack trace on every new image (server-log noise that
    reads like a traceback)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("streamlit.elements.lib.policies")
    logger.addHandler(handler)
    try:
        at = make_app()
        at.radio(key="source_mode").set_value("Use an example").run()
        at.multiselect(key="cam_methods").set_value(["gradcam", "hirescam"]).run()
        at.selectbox(key="example").set_value(1).run()
        no_exception(at)
        assert at.multiselect(key="cam_methods").value == ["gradcam", "hirescam"]
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "default value" in r.getMessage()]


def test_before_an_image_the_page_shows_the_models_own_test_figures(make_app):
    """The landing state: the classifier's measured test figures, one sensitivity bar per class with its
    number of test images, read from meta.json (nothing typed in)."""
    import json

    from app.resources import bundle_metas

    at = make_app()
    no_exception(at)
    test = bundle_metas()[0]["metrics"]["test"]
    assert "The loaded model on its own test split" in [s.value for s in at.subheader]
    values = {m.label: m.value for m in at.metric}
    assert values["Balanced accuracy"] == f"{100 * test['balanced_accuracy']:.1f}%"
    chart = next(c for c in at.get("plotly_chart") if "sensitivity on the test split" in c.proto.spec)
    bars = [(y, x, t) for tr in json.loads(chart.proto.spec)["data"] for y, x, t in zip(tr["y"], tr["x"], tr["text"])]
    assert len(bars) == len(test["per_class"])
    for code, v in test["per_class"].items():
        (x, t), = [(x, t) for y, x, t in bars if y.endswith(f"({code})")]
        assert abs(x - v["recall"]) < 1e-9 and t.endswith(f"of {v['support']}")
