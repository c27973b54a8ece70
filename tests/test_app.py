"""The Analyse page in Streamlit's AppTest on the tiny bundles: examples, real uploads, odd files,
options, caching, and the no-model message."""
from __future__ import annotations

import pytest

from app_fixtures import (FULLRES, app_models_dir, fake_segmenter, make_app, no_exception, odd_files,  # noqa: F401
                          texts)

SECTIONS = ["Prediction set and similar confirmed cases", "Where the model looked",
            "7-point checklist: what the model sees, in dermoscopic criteria", "Lesion outline and measurements",
            "Feature maps", "Details and report"]


def _example(at, index: int = 0):
    at.radio[0].set_value("Use an example").run()
    if index:
        at.selectbox(key="example").set_value(index).run()
    return at


def test_example_renders_every_section(make_app, fake_segmenter):
    fake_segmenter("ellipse")
    at = _example(make_app())
    no_exception(at)
    assert not at.error
    assert [h.value for h in at.header] == SECTIONS
    assert at.get("plotly_chart"), "probability chart missing"
    assert len(at.image) >= 5  # image, heatmap, outline, feature-map grid, enlarged map
    assert at.table, "measurements table missing"
    assert at.table[0].value["Measure"].tolist()[:2] == ["Area", "Longest diameter"]
    assert any("of heat on lesion" in str(img.proto) for img in at.image)
    shown = texts(at)
    assert "The model's top class" in shown
    assert "Ground truth:" in shown and "Actinic keratosis" in shown
    assert "Malignant (sum)" in shown and "Uncertainty (entropy)" in shown
    assert "assume the seven classes are equally common" in shown  # beside the malignant sum, not only on the card
    captions = " ".join(str(img.proto) for img in at.image)
    assert "yellow = strong, dark blue = weak" in captions and "red = strong" in captions  # each map's own colours
    assert at.selectbox(key="fmap_layer").options
    assert at.expander and any(e.label == "Timings per stage" for e in at.expander)
    assert "Ran on: classification — ONNX Runtime" in shown and "CAMs — forward-only" in shown  # small print
    assert [d.label for d in at.get("download_button")] == ["Download case report (HTML)"]


def test_full_resolution_upload(make_app):
    at = make_app()
    path = FULLRES[0]
    at.file_uploader(key="upload").set_value((path.name, path.read_bytes(), "image/jpeg")).run()
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
    assert any(e.label.startswith("Probabilities (not reliable") for e in at.expander)
    assert "No reliable answer for this image" in texts(at)


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
    at = _example(make_app(), 1)
    no_exception(at)
    assert "found no clear lesion" in texts(at)
    assert not at.table
    assert any("no lesion to compare with" in str(img.proto) for img in at.image)


def test_no_model_explains_how_to_train(make_app, tmp_path):
    at = make_app(models=tmp_path)
    no_exception(at)
    assert any("No trained model found" in e.value for e in at.error)
    assert any("python train.py classify" in c.value for c in at.code)
    at.switch_page("card/page.py").run()
    no_exception(at)
    assert any("No trained model found" in e.value for e in at.error)
