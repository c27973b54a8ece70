"""AppTest steps of the Review page, shared by its tests: create a study, open it, read cases."""
from __future__ import annotations

import csv
import io

from app_fixtures import MAIN, TIMEOUT, no_exception

PAGE = "studies/page.py"


def click(at, label: str):
    next(b for b in at.button if b.label == label).click()
    return at.run()


def review_app(models_dir, db_url, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DERMO_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("DERMO_REVIEW_DB", db_url)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    at.switch_page(PAGE).run()
    no_exception(at)
    return at


def create_from_examples(at, name: str = "Examples study", teaching: bool = False) -> str:
    """Create a study of the bundled examples; returns the access code shown once."""
    at.radio(key="review_mode").set_value("Create a study").run()
    at.text_input(key="rc_name").set_value(name)
    at.checkbox(key="rc_examples").check()
    if teaching:
        at.checkbox(key="rc_teaching").check()
    click(at, "Create study")
    no_exception(at)
    assert at.code, "no access code shown"
    return at.code[0].value.strip()


def open_study(at, code: str, reader: str):
    at.text_input(key="ro_code").set_value(code)
    at.text_input(key="ro_reader").set_value(reader)
    click(at, "Open study")
    no_exception(at)
    return at


def blind(at, dx: str, confidence: int = 3, biopsy: bool = False):
    radio = next(r for r in at.radio if r.key and r.key.startswith("bdx_"))
    radio.set_value(dx)
    next(s for s in at.select_slider if s.key.startswith("bconf_")).set_value(confidence)
    if biopsy:
        next(c for c in at.checkbox if c.key.startswith("bbio_")).check()
    click(at, "Confirm blind read")
    no_exception(at)
    return at


def after(at, dx: str, rating: str = "on the lesion", artefact: str | None = None, note: str = ""):
    next(r for r in at.radio if r.key and r.key.startswith("fdx_")).set_value(dx)
    for r in at.radio:
        if r.key and r.key.startswith("frate_"):
            r.set_value(rating)
    if artefact:
        for s in at.selectbox:
            if s.key and s.key.startswith("fart_"):
                s.set_value(artefact)
    if note:
        next(t for t in at.text_area if t.key.startswith("fnote_")).set_value(note)
    click(at, "Confirm and go to the next case")
    no_exception(at)
    return at


def parse_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))
