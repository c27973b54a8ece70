"""Issues 26.2-26.4 where they were seen: the real app in Chromium on the shipped models (a copy whose
heat-warning limit for Grad-CAM is set low, so the warning must show). An image with ink marks: the
caption says how much heat is on the lesion and on artefacts, the warning names Grad-CAM and says what
it means, the colours no longer include white, and the model card shows the measured agreement."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from test_browser import RESULT_TIMEOUT_MS, chromium_page, serving

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
INK = REPO / "tests" / "data" / "labelled" / "images" / "ISIC_0030006.jpg"   # nevus with blue ink round it


@pytest.fixture
def shipped_server(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(REPO / "assets" / "models", models)
    path = models / "classifier" / "meta.json"
    meta = json.loads(path.read_text())
    meta["interpretability"]["heat_warning"]["off_lesion_limit"]["gradcam"] = 0.0
    path.write_text(json.dumps(meta))
    with serving(models, tmp_path / "streamlit.log") as url:
        yield url


def test_heat_shares_warning_and_colours_in_the_browser(shipped_server, tmp_path):
    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    with chromium_page(viewport={"width": 1400, "height": 2600}) as page:
        page.goto(shipped_server, timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(INK), timeout=RESULT_TIMEOUT_MS)
        page.get_by_text("Details and report").first.wait_for(timeout=RESULT_TIMEOUT_MS)
        reveal = page.get_by_text("Show the model's output anyway", exact=False)
        if reveal.count():   # a gate that hides the output: the clinician opens it on purpose
            reveal.first.click()
        page.get_by_text("of heat on lesion", exact=False).first.wait_for(timeout=RESULT_TIMEOUT_MS)
        warning = page.get_by_text("More of the heat lies off the lesion than usual", exact=False).first
        warning.wait_for(timeout=RESULT_TIMEOUT_MS)
        assert "Grad-CAM:" in warning.inner_text()
        assert page.get_by_text("does not say the answer is wrong", exact=False).count() == 1
        assert page.get_by_text("Less than 50% of the heat", exact=False).count() == 0
        row = page.get_by_role("row").filter(has_text="Colours present").first
        row.wait_for(timeout=RESULT_TIMEOUT_MS)
        value = [c.strip() for c in row.inner_text().split("\n") if c.strip()][1]   # measure, value, meaning
        assert "brown" in value and "white" not in value, value
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(shots / "analyse-heat-warning.png"), full_page=True)
        page.goto(shipped_server + "/model_card", timeout=60_000)
        page.get_by_role("tab", name="Artefacts and colours").click(timeout=RESULT_TIMEOUT_MS)
        page.get_by_text("Artefacts and dermoscopic colours").first.wait_for(timeout=RESULT_TIMEOUT_MS)
        page.get_by_role("tab", name="Heatmaps").click(timeout=RESULT_TIMEOUT_MS)
        page.get_by_text("The heat warning.", exact=False).first.wait_for(timeout=RESULT_TIMEOUT_MS)
        assert page.locator("[data-testid=stException]").count() == 0
