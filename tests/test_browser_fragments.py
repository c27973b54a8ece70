"""Issue 26 (page latency) in a real browser: on the Analyse page, switching the CAM layer reruns the
heatmap block alone (a Streamlit fragment), not the whole page, and the case report downloaded
afterwards describes the heatmaps now shown. Same set-up and skips as tests/test_browser.py
(Playwright + Debian's Chromium, the tiny bundles)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app_fixtures import FULLRES, app_models_dir  # noqa: F401
from test_browser import CHROMIUM, CHROMIUM_ARGS, RESULT_TIMEOUT_MS, server  # noqa: F401

pytestmark = pytest.mark.browser


class Deltas:
    """Counts the elements the server sends (ForwardMsg deltas) and the runs it finishes."""

    def __init__(self, page):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.deltas = self.finished = 0
        self._msg = ForwardMsg
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            return
        m = self._msg()
        try:
            m.ParseFromString(bytes(payload))
        except Exception:  # noqa: BLE001 - not every frame is a ForwardMsg
            return
        kind = m.WhichOneof("type")
        self.deltas += kind == "delta"
        self.finished += kind == "script_finished"

    def during(self, page, action) -> int:
        """Deltas sent for the run `action` sets off (waits until that run has finished)."""
        deltas, finished = self.deltas, self.finished
        action()
        for _ in range(RESULT_TIMEOUT_MS // 50):
            if self.finished > finished:
                break
            page.wait_for_timeout(50)
        page.wait_for_timeout(300)  # frames already on their way
        return self.deltas - deltas


def test_switching_the_cam_layer_redraws_only_the_heatmaps(server, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (Python package only)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600}, accept_downloads=True)
            sent = Deltas(page)
            sent.during(page, lambda: page.goto(server, timeout=60_000))  # the first page's run is over
            upload = page.locator("input[type=file]").first
            whole = sent.during(page, lambda: upload.set_input_files(str(FULLRES[0]), timeout=RESULT_TIMEOUT_MS))
            page.get_by_text("Download case report (HTML)").wait_for(timeout=RESULT_TIMEOUT_MS)
            gated = page.get_by_text("Show the model's output anyway", exact=False)
            if gated.count():  # the quality gate hides the output (issue 26.1): open it
                whole = max(whole, sent.during(page, gated.first.click))
                page.get_by_text(re.compile(r"^Top class \(not reliable\): ")).first.wait_for(timeout=RESULT_TIMEOUT_MS)
            box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Layer").first
            def chosen() -> str:
                return box.inner_text() + " " + box.locator("input").input_value()

            before = chosen()
            box.locator("input").click()
            if not page.get_by_role("option").count():
                page.keyboard.press("ArrowDown")  # opens the list when the click only focused the box
            first_layer = page.get_by_role("option").first
            layer = first_layer.inner_text().split(" (")[0].strip()
            assert layer and layer not in before, (layer, before)
            switch = sent.during(page, first_layer.click)
            assert layer in chosen(), chosen()
            # the heatmap block alone: a fraction of what a whole page run sends
            assert 0 < switch < whole / 2, (switch, whole)
            assert page.get_by_text("Prediction set at", exact=False).first.is_visible()  # the rest stays drawn
            with page.expect_download(timeout=RESULT_TIMEOUT_MS) as dl:
                page.get_by_text("Download case report (HTML)").click()
            report = Path(dl.value.path()).read_text()
            assert f"at layer {layer}." in report, re.findall(r"at layer [^<]*", report)
            assert page.locator("[data-testid=stException]").count() == 0
        finally:
            browser.close()
