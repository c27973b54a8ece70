"""Batch review, Model card and About pages in AppTest on the tiny bundles."""
from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest

from app_fixtures import SMALL, app_models_dir, card_tab, make_app, no_exception, texts  # noqa: F401


def _images(n: int = 8):
    return [(p.name, p.read_bytes(), "image/jpeg") for p in sorted((SMALL / "images").glob("*.jpg"))[:n]]


def test_batch_with_labels_shows_metrics_and_opens_a_row(make_app):
    at = make_app(page="batch/page.py")
    no_exception(at)
    at.file_uploader(key="batch_files").set_value(_images(8))
    at.file_uploader(key="batch_labels").set_value(("metadata.csv", (SMALL / "metadata.csv").read_bytes(), "text/csv"))
    at.run()
    no_exception(at)
    table = at.dataframe[0].value
    assert len(table) == 8
    assert {"file", "top class", "probability", "malignant probability", "entropy", "flags"} <= set(table.columns)
    shown = texts(at)
    assert "Accuracy" in shown and "Balanced accuracy" in shown and "8 labelled images scored" in shown
    assert at.get("plotly_chart"), "confusion matrix missing"
    assert any(d.label == "Download table (CSV)" for d in at.get("download_button"))

    at.session_state["batch_table"] = {"selection": {"rows": [3], "columns": [], "cells": []}}
    at.run()
    name = table.iloc[3]["file"]
    button = next(b for b in at.button if b.label == f"Open {name} in Analyse")
    button.click().run()
    no_exception(at)
    assert "Opened from Batch review" in texts(at)
    assert at.header and "Where the model looked" in [h.value for h in at.header]


def test_batch_zip_reports_skipped_members(make_app):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, _ in _images(3):
            zf.writestr(f"cases/{name}", data)
        zf.writestr("cases/readme.txt", "not an image")
        zf.writestr("cases/inner.zip", b"PK")
        zf.writestr("cases/broken.jpg", b"\xff\xd8 nope")
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(("cases.zip", buf.getvalue(), "application/zip")).run()
    no_exception(at)
    table = at.dataframe(key="batch_table").value
    assert len(table) == 4
    assert table.set_index("file").loc["broken.jpg", "top class"] == "unreadable"
    skipped = next(e for e in at.expander if "skipped" in e.label)
    reasons = skipped.dataframe[0].value.set_index("file")["reason"].to_dict()
    assert reasons == {"cases.zip: readme.txt": "not an image file",
                       "cases.zip: inner.zip": "nested archive not opened"}


def test_batch_rejects_a_bad_labels_file(make_app):
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(_images(2))
    at.file_uploader(key="batch_labels").set_value(("labels.csv", b"a,b\n1,2\n", "text/csv")).run()
    no_exception(at)
    assert any("labels file cannot be used" in e.value for e in at.error)


def test_model_card_renders_measured_figures(make_app, app_models_dir):
    at = make_app(page="card/page.py")
    no_exception(at)
    meta = json.loads((app_models_dir / "classifier" / "meta.json").read_text())
    shown = texts(at)
    bacc = meta["metrics"]["test"]["balanced_accuracy"]
    assert f"Balanced accuracy {bacc:.1%}" in shown
    assert len(at.get("plotly_chart")) >= 3  # confusion, reliability, ROC
    assert "`None`" not in [m.value for m in at.markdown]  # no stray value written by Streamlit's magic
    assert "Mean Dice" not in shown  # the segmenter is on another tab, not run until opened
    at = card_tab(at, "Data and training")
    shown = texts(at)
    assert meta["split"]["hash"] in shown
    assert "Mean Dice" in shown
    assert f"Balanced accuracy {bacc:.1%}" not in shown
    assert any(meta["command"] == c.value for c in at.code)
    assert len(at.get("plotly_chart")) >= 2  # training curves


def test_model_card_survives_sparse_meta(make_app, app_models_dir, tmp_path):
    shutil.copytree(app_models_dir / "classifier", tmp_path / "classifier")
    meta_path = tmp_path / "classifier" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("metrics", "history", "data", "split", "train_config", "quality", "command"):
        meta.pop(key, None)
    meta_path.write_text(json.dumps(meta))
    at = make_app(models=tmp_path, page="card/page.py")
    no_exception(at)
    shown = texts(at)
    for tab in ("Prediction sets and similar cases", "Other dermatoscopes and the gate", "Heatmaps",
                "7-point checklist", "Artefacts and colours", "Data and training"):
        shown += texts(card_tab(at, tab))
    assert "No test metrics recorded" in shown and "No segmenter bundle" in shown


@pytest.mark.parametrize("imbalance, warned", [("balanced", True), ("both", True), ("sqrt", True), ("logit-adjust", True),
                                               ("weighted", False)])
def test_model_card_warns_when_probabilities_assume_balanced_classes(make_app, app_models_dir, tmp_path,
                                                                     imbalance, warned):
    shutil.copytree(app_models_dir / "classifier", tmp_path / "classifier")
    meta_path = tmp_path / "classifier" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["train_config"]["imbalance"] = imbalance
    meta_path.write_text(json.dumps(meta))
    at = make_app(models=tmp_path, page="card/page.py")
    no_exception(at)
    assert ("Probabilities assume equally common classes" in texts(at)) == warned


def test_model_card_reports_broken_meta(make_app, tmp_path):
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "meta.json").write_text("{not json")
    at = make_app(models=tmp_path, page="card/page.py")
    no_exception(at)
    assert any("not readable JSON" in e.value for e in at.error)


def test_about_page(make_app):
    at = make_app(page="about/page.py")
    no_exception(at)
    shown = texts(at)
    assert "Not a medical device" in shown
    assert "CC BY-NC-SA 4.0" in shown and "10.7910/DVN/DBW86T" in shown and "Tschandl" in shown


def _gray(name: str, data: bytes) -> tuple[str, bytes, str]:
    from PIL import Image
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").convert("RGB").save(buf, "JPEG", quality=92)
    return (f"gray-{name}", buf.getvalue(), "image/jpeg")


def test_batch_gated_rows_are_gated_and_scored_apart(make_app):
    """Issue 26.9: a gated image showed its top class and counted in the one accuracy figure."""
    images = _images(4)
    gray = _gray(*images[0][:2])
    labels = (SMALL / "metadata.csv").read_text().splitlines()
    gray_row = next(r for r in labels if images[0][0][:-4] in r).replace(images[0][0][:-4], gray[0][:-4])
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(images + [gray])
    at.file_uploader(key="batch_labels").set_value(("m.csv", "\n".join(labels + [gray_row]).encode(), "text/csv"))
    at.run()
    no_exception(at)
    table = at.dataframe(key="batch_table").value.set_index("file")
    row = table.loc[gray[0]]
    assert row["top class"] == "gated: answer withheld" and row["gated"] == "yes"
    assert row[["probability", "malignant probability", "prediction set", "kNN vote"]].isna().all()
    shown = texts(at)
    assert "5 labelled images scored: 4 passed the gate, 1 gated" in shown
    assert "Gate passed (4 images)" in shown and "All images, gated ones included (5)" in shown
    at.toggle(key="batch_show_gated").set_value(True).run()
    assert at.dataframe(key="batch_table").value.set_index("file").loc[gray[0], "probability"] > 0


def test_batch_survives_a_visit_to_analyse(make_app):
    """Issue 26.9: after "Open … in Analyse", coming back lost the whole batch."""
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(_images(3)).run()
    at.session_state["batch_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    next(b for b in at.button if b.label.startswith("Open ")).click().run()
    assert "Opened from Batch review" in texts(at)
    at.switch_page("batch/page.py").run()
    no_exception(at)
    assert len(at.dataframe(key="batch_table").value) == 3
    assert "Showing the batch classified earlier (3 images)" in texts(at)
    next(b for b in at.button if b.label == "Clear the batch").click().run()
    assert "Upload images or a .zip archive" in texts(at)


def test_batch_says_why_a_whole_archive_was_refused(make_app, monkeypatch):
    """Issue 27.12: the reason hid in a collapsed expander under "No images to classify"."""
    from model.data import archive
    monkeypatch.setattr(archive, "MAX_MEMBERS", 2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, _ in _images(3):
            zf.writestr(name, data)
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(("many.zip", buf.getvalue(), "application/zip")).run()
    no_exception(at)
    assert any("**many.zip** was not opened" in e.value.replace("\\", "") and "holds 3 files; at most 2" in e.value
               for e in at.error)


def test_batch_labels_are_parsed_once_and_a_huge_table_is_refused(make_app, monkeypatch):
    """Issue 27.3: a 1M-row labels file was parsed on every rerun (14 s, 2.8 GB each click)."""
    from model.data import tables
    calls = []
    real = tables.read_table
    monkeypatch.setattr(tables, "read_table", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(_images(2))
    at.file_uploader(key="batch_labels").set_value(("m.csv", (SMALL / "metadata.csv").read_bytes(), "text/csv")).run()
    at.toggle(key="batch_tta").set_value(False).run()
    at.run()
    assert len(calls) == 1
    huge = b"image_id,dx\n" + b"".join(b"ISIC_%07d,nv\n" % k for k in range(60_001))
    at.file_uploader(key="batch_labels").set_value(("huge.csv", huge, "text/csv")).run()
    no_exception(at)
    assert len(calls) == 1   # refused before parsing
    assert any("about 60,002 rows for 2 images" in e.value.replace("\\", "") for e in at.error)


def test_batch_names_lose_direction_overrides_but_keep_the_original(make_app):
    """Issue 27.10: U+202E reversed captions and survived into the CSV."""
    name, data, mime = _images(1)[0]
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value((f"evil\u202egpj.{name}", data, mime)).run()
    no_exception(at)
    table = at.dataframe(key="batch_table").value
    assert "\u202e" not in table.iloc[0]["file"] and table.iloc[0]["original name"] == f"evil\\u202egpj.{name}"


def test_analyse_shows_a_cleaned_name_and_the_original_apart(make_app):
    """Issue 27.10: "300×225 px" read "xp 522×003" after a U+202E in the file name."""
    name, data, mime = _images(1)[0]
    at = make_app()
    at.file_uploader(key="upload").set_value((f"a\u202egpj.{name}", data, mime)).run()
    no_exception(at)
    shown = texts(at)
    assert "\u202e" not in shown
    assert "File name as uploaded: au202egpj." in shown   # the escape, its backslash dropped by texts()


def test_about_says_what_each_page_keeps(make_app):
    """Issue 26.5: About said uploads are never stored, while studies store thumbnails and names."""
    from app.studies.cases import THUMB_SIDE
    at = make_app(page="about/page.py")
    shown = texts(at)
    assert "are not stored on disk by the app" not in shown
    assert f"thumbnail of at most {THUMB_SIDE}×{THUMB_SIDE} pixels" in shown and "the reader's name as typed" in shown


def test_analyse_and_batch_write_nothing(make_app, tmp_path, monkeypatch):
    """What About promises for Analyse and Batch review: nothing written, in HOME, the temporary
    folder or the repository."""
    import tempfile
    from pathlib import Path
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    repo = Path(__file__).resolve().parents[1]
    before = {p for p in repo.rglob("*") if ".venv" not in p.parts and "__pycache__" not in p.parts}
    at = make_app()
    name, data, mime = _images(1)[0]
    at.file_uploader(key="upload").set_value((name, data, mime)).run()
    no_exception(at)
    at.switch_page("batch/page.py").run()
    at.file_uploader(key="batch_files").set_value(_images(3)).run()
    no_exception(at)
    after = {p for p in repo.rglob("*") if ".venv" not in p.parts and "__pycache__" not in p.parts}
    assert list(home.rglob("*")) == [] and list(tmp.rglob("*")) == [] and after - before == set()
