"""Hostile names in what the app exports: file names, zip member names and labels that a
spreadsheet would run as formulas (CSV injection). Every CSV the app writes neutralises them."""
from __future__ import annotations

import csv
import io
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app_fixtures import SMALL, app_models_dir, make_app, no_exception  # noqa: F401
from app.widgets.csv_export import safe_csv
from model.files import FORMULA_STARTS, neutralise

REPO = Path(__file__).resolve().parents[1]
FORMULAS = ["=HYPERLINK(\"evil.example\",\"open\").jpg", "+1+2.jpg", "-2+3.jpg", "@SUM(A1:A9).jpg",
            "\t=1+1.jpg", "\r=1+1.jpg", "  =cmd|' /C calc'!A0.jpg", "\uff1d1+1.jpg"]
HARMLESS = ["ISIC_0024306.jpg", "a=b.jpg", "lesion-1.jpg", "'quoted'.jpg", "", "naïve 😀.png"]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _dangerous(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS)


@pytest.mark.parametrize("name", FORMULAS)
def test_formula_like_text_gets_an_apostrophe(name):
    assert neutralise(name) == "'" + name


@pytest.mark.parametrize("value", HARMLESS + [-1.5, 3, None])
def test_other_values_are_left_alone(value):
    assert neutralise(value) == value


def test_safe_csv_keeps_numbers_and_neutralises_text_and_headers():
    df = pd.DataFrame({"file": FORMULAS + HARMLESS[:1], "probability": [-0.5] + [0.25] * len(FORMULAS),
                       "=label": ["-mel"] + ["nv"] * len(FORMULAS)})
    rows = _cells(safe_csv(df))
    assert rows[0] == ["file", "probability", "'=label"]
    assert not any(_dangerous(c) for r in rows for c in r if not c.lstrip("-").replace(".", "").isdigit())
    assert rows[1] == ["'" + FORMULAS[0], "-0.5", "'-mel"]          # a negative number stays a number
    assert [r[0] for r in rows[1:]] == ["'" + n for n in FORMULAS] + HARMLESS[:1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=5))
def test_fuzz_exported_text_never_starts_a_formula(names):
    rows = _cells(safe_csv(pd.DataFrame({"file": names, "p": [0.5] * len(names)})))
    for name, row in zip(names, rows[1:]):
        cell = row[0]
        assert cell in (name, "'" + name) and not _dangerous(cell), (name, cell)


def test_tables_own_export_is_switched_off():
    """Streamlit's table download and copy write cells as they are; the app's CSV button replaces them."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["disableDataExport"] is True


def test_batch_download_neutralises_zip_and_file_names(make_app, monkeypatch):
    import app.widgets.csv_export as export

    written: list[str] = []
    real = export.safe_csv
    monkeypatch.setattr(export, "safe_csv", lambda df: written.append(real(df)) or written[-1])
    jpeg = next((SMALL / "images").glob("*.jpg")).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in FORMULAS[:4]:
            zf.writestr(f"cases/{name}", jpeg)
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value([("cases.zip", buf.getvalue(), "application/zip"),
                                                   ("=1+1.jpg", jpeg, "image/jpeg")]).run()
    no_exception(at)
    assert written, "the page did not build its CSV with app.widgets.csv_export.safe_csv"
    files = [r[0] for r in _cells(written[-1])[1:]]
    assert sorted(files) == sorted("'" + n for n in FORMULAS[:4] + ["=1+1.jpg"])
    shown = at.dataframe(key="batch_table").value["file"].tolist()
    assert "=1+1.jpg" in shown                                     # the page itself shows names as they are
