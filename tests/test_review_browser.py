"""A short review study in a real browser, with the server killed in the middle: create a study
from the bundled examples, read case 1 (blind, reveal, after read), kill the `streamlit run`
process with SIGKILL, start it again, open the study with its code, read case 2; a second reader
in a second browser (its own context: no shared session or cookies) reads case 1 with the
keyboard only (Ctrl+Enter confirms); download the CSV export: its rows must be exactly what was
clicked. Saves screenshots ($SCREENSHOT_DIR or tmp).

Needs the playwright Python package and Debian's chromium; skipped with the reason otherwise.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app_fixtures import app_models_dir  # noqa: F401
from test_browser import CHROMIUM, CHROMIUM_ARGS, start_streamlit
from tools.streamlit_server import free_port, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
WAIT_MS = 180_000


def _start(port: int, models: Path, db_url: str, log: Path) -> subprocess.Popen:
    return start_streamlit(port, {"DERMO_MODELS_DIR": str(models), "DERMO_REVIEW_DB": db_url}, log)


def _open(page, url: str, code: str, reader: str) -> None:
    page.goto(f"{url}/review", timeout=60_000)
    page.get_by_role("textbox", name="Access code").fill(code, timeout=WAIT_MS)
    page.get_by_role("textbox", name="Your name (as reader)").fill(reader)
    page.get_by_role("button", name="Open study").click()


def _read_case(page, case_no: int, blind: str, final: str | None, rating: str, keyboard: bool = False,
               finished: int | None = None) -> None:
    """Blind read, reveal, after read; `keyboard`: confirm both forms with Ctrl+Enter, not a click."""
    page.get_by_text(f"Case {case_no} (file name hidden").wait_for(timeout=WAIT_MS)
    page.get_by_test_id("stForm").get_by_text(blind, exact=True).click()  # not a chart label
    if keyboard:  # Streamlit leaves keys typed into a field to the field: confirm from outside one
        page.get_by_text("Blind read", exact=False).first.click()
        page.keyboard.press("Control+Enter")
    else:
        page.get_by_role("button", name="Confirm blind read").click()
    page.get_by_text("After read").wait_for(timeout=WAIT_MS)
    page.get_by_text("Where the model looked").wait_for(timeout=WAIT_MS)
    if final:
        page.get_by_test_id("stForm").get_by_text(final, exact=True).click()
    page.get_by_test_id("stForm").get_by_text(rating, exact=True).first.click()
    if keyboard:
        page.get_by_text("After read", exact=False).first.click()
        page.keyboard.press("Control+Enter")
    else:
        page.get_by_role("button", name="Confirm and go to the next case").click()
    page.get_by_text(f"{finished or case_no} of 8 cases finished").wait_for(timeout=WAIT_MS)


def test_study_survives_a_killed_server_and_exports_the_clicks(app_models_dir, tmp_path, capsys):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (Python package only)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "review.sqlite3"
    port, log = free_port(), tmp_path / "streamlit.log"
    url = f"http://127.0.0.1:{port}"
    proc = _start(port, app_models_dir, f"sqlite:///{db}", log)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                page.goto(f"{url}/review", timeout=60_000)
                page.get_by_text("Create a study").click(timeout=WAIT_MS)
                page.get_by_role("textbox", name="Study name").fill("Browser study")
                page.get_by_text("Include the 8 bundled example images").click()
                page.get_by_role("button", name="Create study").click()
                code = page.locator("[data-testid=stCode] code").first.inner_text(timeout=WAIT_MS).strip()
                assert len(code) >= 16
                page.screenshot(path=str(shots / "review-created.png"), full_page=True)
                _open(page, url, code, "Ann")
                _read_case(page, 1, "Melanoma (mel)", "Benign keratosis (bkl)", "on the lesion")
                page.screenshot(path=str(shots / "review-case2-blind.png"), full_page=True)

                proc.send_signal(signal.SIGKILL)  # the server dies mid-study
                proc.wait(30)
                proc = _start(port, app_models_dir, f"sqlite:///{db}", log)

                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                _open(page, url, code, "Ann")
                page.get_by_text("1 of 8 cases finished").wait_for(timeout=WAIT_MS)  # continues at case 2
                t0 = time.perf_counter()
                _read_case(page, 2, "Unsure", None, "on an artefact")
                case_s = time.perf_counter() - t0

                other = browser.new_context(viewport={"width": 1400, "height": 2400})  # a second browser
                second = other.new_page()
                _open(second, url, code, "Ben")
                _read_case(second, 1, "Melanocytic nevus (nv)", None, "partly on the lesion", keyboard=True, finished=1)
                second.screenshot(path=str(shots / "review-second-reader.png"), full_page=True)
                assert second.locator("[data-testid=stException]").count() == 0
                other.close()

                page = browser.new_page(viewport={"width": 1400, "height": 2400})  # the export as of now
                _open(page, url, code, "Ann")
                page.get_by_text("2 of 8 cases finished").wait_for(timeout=WAIT_MS)
                page.get_by_text("Progress and results").click()
                with page.expect_download(timeout=WAIT_MS) as download:
                    page.get_by_role("button", name="Download every read (CSV)").click()
                text = Path(download.value.path()).read_text(encoding="utf-8")
                page.screenshot(path=str(shots / "review-results.png"), full_page=True)
                assert page.locator("[data-testid=stException]").count() == 0
                # issue 27.4: closed from the results and opened again, the radio said "Read cases"
                # while the page drew the results, and clicking "Read cases" did nothing
                page.get_by_role("button", name="Close study").click()
                _open(page, url, code, "Ann")
                page.get_by_text("2 of 8 cases finished").wait_for(timeout=WAIT_MS)
                assert page.get_by_role("radio", name="Read cases").is_checked()
                assert page.get_by_text("Download every read (CSV)").count() == 0
            finally:
                browser.close()
    finally:
        stop(proc)
    with capsys.disabled():
        print(f"\n[review browser] one case (blind read, reveal with the analysis and ROAD, after read) took "
              f"{case_s:.1f} s of app and browser time, clicks scripted")
    rows = list(csv.DictReader(io.StringIO(text)))
    got = [(r["reader"], r["case_position"], r["blind_dx"], r["final_dx"], r["heatmap_ratings"]) for r in rows]
    assert sorted(got) == [("Ann", "1", "mel", "bkl", "on the lesion"), ("Ann", "2", "unsure", "unsure", "on an artefact"),
                           ("Ben", "1", "nv", "nv", "partly on the lesion")]
    assert rows[0]["case_name"] == "ISIC_0026468.jpg" and rows[0]["truth"] == "akiec"
