"""The app's pure helpers on plain arrays: charts, overlays, outlines, tables, the case report,
batch gathering and scoring, and the torch-free meta reader. No model needed."""
from __future__ import annotations

import base64
import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.widgets import components as c
from app.widgets.tables import gather, results_frame, score, stem
from app.analyse.case_report import DISCLAIMER, build_case_report
from app.meta import MetaError, dig, read_meta, read_split_ids
from model.inference.measurements import Measurements
from model.inference.results import Analysis, BatchPrediction

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _analysis(h=60, w=80) -> Analysis:
    rng = np.random.default_rng(0)
    p = np.array([0.05, 0.05, 0.1, 0.05, 0.3, 0.4, 0.05], np.float32)
    mask = np.zeros((h, w), bool)
    mask[15:45, 20:60] = True
    m = Measurements(1200, 25.0, 44.7, 0.1, 0.05, 1.2, 0.95, ["dark brown"], 0.12)
    return Analysis(image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), scale_to_original=1.0, classes=CLASSES,
                    display_names=CLASSES, probabilities=p, malignant_probability=0.4, melanoma_flag=True,
                    melanoma_threshold=0.12, entropy=0.7, tta_spread=0.02,
                    tta_agreement=0.75, low_confidence=True, uncertainty_reasons=["top class probability 40%"],
                    quality_warnings=["The image looks <b>blurred</b>."], ood_distance=None, ood_threshold=None,
                    cam_class="nv", cam_layer="layer4", cams={"gradcam": rng.random((h, w), dtype=np.float32)},
                    attention_on_lesion={"gradcam": 0.3}, feature_maps=None, lesion_mask=mask, measurements=m,
                    notes=["CMYK image converted to RGB."], timings_ms={"classify": 3.0},
                    model_info={"classifier": "test_resnet · 2026-01-01 · split abc"})


def test_probability_figure_sorted_and_malignant_marked():
    fig = c.probability_figure(CLASSES, [0.05, 0.05, 0.1, 0.05, 0.3, 0.4, 0.05])
    order = list(fig.layout.yaxis.categoryarray)
    assert order[-1] == "Melanocytic nevus (nv)" and order[-2] == "Melanoma (mel)"  # top of the chart
    malignant = next(t for t in fig.data if t.name == "malignant class")
    assert set(malignant.y) == {"Melanoma (mel)", "Basal cell carcinoma (bcc)",
                                "Actinic keratosis /<br>intraepithelial carcinoma (akiec)"}
    assert malignant.marker.pattern.shape == "/"
    assert "40.0%" in next(t for t in fig.data if t.name == "benign class").text


def test_heatmap_overlay_blends_and_resizes():
    rgb = np.full((40, 50, 3), 100, np.uint8)
    heat = np.zeros((5, 5), np.float32)
    assert np.array_equal(c.heatmap_overlay(rgb, heat, 0.0), rgb)
    out = c.heatmap_overlay(rgb, np.ones((5, 5)), 1.0)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (128, 0, 0)  # jet at 1.0 is dark red, in RGB order


def test_outline_only_on_the_border():
    rgb = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[30:70, 30:70] = True
    out = c.outline_image(rgb, mask)
    green = np.all(out == c.OUTLINE_COLOUR, axis=-1)
    assert green[30, 50] and not green[50, 50] and not green[5, 5]
    assert np.array_equal(c.outline_image(rgb, None), rgb)
    assert c.mask_image(rgb, mask)[50, 50].any()


def test_feature_tiles_and_colorize():
    maps = np.random.default_rng(1).random((3, 4, 6)).astype(np.float32)
    tiles, captions = c.feature_tiles(maps, [7, 2, 9], [0.5, 0.4, 0.3], tile=60)
    assert [t.shape for t in tiles] == [(40, 60, 3)] * 3 and captions[0] == "ch 7 · 0.50"
    assert c.colorize(maps[0], (8, 12)).shape == (8, 12, 3)


def test_measurement_rows_have_units_and_meanings():
    rows = c.measurement_rows(_analysis().measurements)
    assert rows[0]["Value"] == "1,200 px (25.0% of image)"
    assert rows[1]["Value"] == "45 px"
    assert all(r["Meaning"] for r in rows)


def test_md_escape_neutralises_markdown():
    assert c.md_escape("[x](javascript:alert(1)) *b*") == r"\[x\]\(javascript\:alert\(1\)\) \*b\*"


def test_case_report_is_self_contained():
    a = _analysis()
    html = build_case_report(a, file_name="<script>x</script>.jpg", image_sha256="ab" * 32, cams=a.cams,
                             cam_class="nv", cam_layer="layer4", attention={"gradcam": 0.3},
                             method_labels={"gradcam": "Grad-CAM"}, ground_truth="Melanoma (mel)")
    assert html.count(DISCLAIMER) == 2
    assert "<script" not in html and "&lt;script&gt;" in html
    assert not re.search(r"(src|href)=['\"]https?:", html)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 3 + (len(a.feature_maps.channels) if a.feature_maps else 0)  # image, outline, heatmap, maps
    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).size == (80, 60)
    for text in ("Melanocytic nevus", "40.0%", "quality check failed", "&lt;b&gt;blurred", "Low confidence",
                 "30% of heat on lesion", "Longest diameter", "CMYK image converted", "test_resnet",
                 "Ground truth", "UTC"):
        assert text in html, text


def test_gather_expands_zips_and_makes_names_unique():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/x.jpg", b"1")
        zf.writestr("b/x.jpg", b"2")
        zf.writestr("notes.txt", b"3")
    items = gather([("x.jpg", b"0"), ("set.zip", buf.getvalue()), ("bad.zip", b"not a zip")])
    assert [n for n, _ in items.images] == ["x.jpg", "x.jpg (2)", "x.jpg (3)"]
    assert ("set.zip: notes.txt", "not an image file") in items.skipped
    assert items.refused == [("bad.zip", items.refused[0][1])] and "Not a readable .zip" in items.refused[0][1]
    assert stem("x.jpg (2)") == "x" and stem("dir/ISIC_1.png") == "ISIC_1"


def test_results_frame_and_score():
    p1 = np.array([0, 0, 0, 0, 0.9, 0.1, 0], np.float32)
    p2 = np.array([0, 0, 0, 0, 0.2, 0.8, 0], np.float32)
    preds = [BatchPrediction("a.jpg", p1, "mel", 0.9, 0.9, 0.2, [], melanoma_flag=True),
             BatchPrediction("b.jpg", p2, "nv", 0.8, 0.2, 0.3, ["blurred"], melanoma_flag=False),
             BatchPrediction("c.jpg", None, None, None, None, None, ["unreadable"], "The file is empty."),
             BatchPrediction("d.jpg", p2, "nv", 0.8, 0.2, 0.3, [])]
    df = results_frame(preds, CLASSES)
    assert list(df["top class"]) == ["Melanoma", "gated: answer withheld", "unreadable", "Melanocytic nevus"]
    assert list(df["gated"]) == ["", "yes", "", ""]   # "blurred" is the gate's
    assert df.loc[2, "flags"] == "unreadable: The file is empty."
    assert list(df["melanoma flag"]) == ["FLAG", "", "n/a", "n/a"]  # n/a: unreadable, or a bundle without a flag
    s = score(preds, {"a": "mel", "b": "mel", "d": "seb"}, CLASSES)
    assert s.matched == 2 and s.unknown_labels == ["d.jpg: seb"] and s.unmatched == []
    assert s.report["accuracy"] == pytest.approx(0.5)
    assert score(preds, {}, CLASSES).report is None


def test_meta_reader(tmp_path):
    assert read_meta(tmp_path) is None
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(MetaError):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"task": "classify", "metrics": {"test": {"n": 3}}}))
    meta = read_meta(tmp_path)
    assert dig(meta, "metrics", "test", "n") == 3 and dig(meta, "metrics", "val", "n", default=0) == 0
    assert read_split_ids(tmp_path) is None
    (tmp_path / "split.json").write_text(json.dumps({"splits": {"test": ["ISIC_1"]}}))
    assert read_split_ids(tmp_path) == {"test": {"ISIC_1"}}


def test_the_cards_faithfulness_grid_runs_shallow_to_deep():
    """The axis says "shallow -> deep" but the columns ran blocks.6, blocks.0, blocks.1, ... (the rows' order)."""
    from app.card.faithfulness import road_figure

    rows = [{"method": "gradcam", "layer": l, "road": 0.1} for l in ("blocks.6", "blocks.0", "blocks.10", "blocks.2")]
    assert list(road_figure(rows).data[0].x) == ["blocks.0", "blocks.2", "blocks.6", "blocks.10"]


def test_the_road_legend_defines_the_signs_it_shows():
    """The table showed "MoRF Δp +0.155, LeRF Δp +0.302" under a legend saying MoRF "should drop" (issue 26.7)."""
    from app.analyse.faithfulness import EXPLAIN

    assert "should drop" not in EXPLAIN
    assert "after minus before" in EXPLAIN and "negative when it drops" in EXPLAIN
    assert "ROAD = (LeRF Δp − MoRF Δp) / 2" in EXPLAIN
    morf, lerf = 0.155, 0.302  # the image the tester saw: both rose, and the map is still faithful by ROAD
    assert (lerf - morf) / 2 > 0
