"""Analyse page: one image in; probabilities, uncertainty, heatmaps, feature maps, outline,
measurements and a downloadable case report out."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import streamlit as st

from app.analyse import sections as view
from app.widgets.aids import aids_section
from app.widgets.upload import choose_source
from app.widgets.components import md_escape
from app.analyse.case_report import REPORT_KEY, WHAT_IF, Shown, build_case_report
from app.analyse.checklist import checklist_panel
from app.analyse.landing import at_a_glance
from app.analyse.faithfulness import after_paint as faithfulness_after_paint
from app.analyse.whatif import panel as whatif_panel
from app.resources import analyse, bundle_metas, cam_method_labels, get_loaded, sha256, thresholds, training_split_of, warm_up
from app.widgets.sidebar import COVERAGE_KEY
from model.aids.conformal import DEFAULT_COVERAGE
from model.data.preprocess import ImageError
from model.explain.verdicts import randomisation_failures

# ----------------------------------------------------------------------------- fragments
# Each block whose widgets change only itself is a fragment: switching a CAM method or layer, the
# opacity, a what-if, the outline view or a feature-map layer reruns that block alone, so neither the
# server nor the browser redraws the rest of the page (docs/page-latency.md).
def fragment_rerun() -> bool:
    """True while Streamlit reruns a fragment alone (not the whole page)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx and ctx.fragment_ids_this_run)


@st.fragment
def explanations(data: bytes, base, layers: list[str], labels: dict[str, str], image_key: str, has_lesion: bool,
                 heat_limits: dict, hidden: bool, failing, coverage: int, now: dict) -> dict:
    """Heatmaps, their faithfulness and the what-ifs. Fills `now` (kept by the case report) with what is
    shown: cam, what_ifs and, on a rerun of this block alone, road; on a whole-page run the page measures
    faithfulness into now["faith_slot"] after everything else is drawn."""
    st.header("Where the model looked", divider="gray")
    cam = view.cam_section(data, base, layers, labels, image_key, has_lesion, heat_limits, hidden=hidden,
                           failing=failing)
    faith_slot = st.container()
    st.header(WHAT_IF, divider="gray")
    what_ifs = whatif_panel(data, base, cam, labels, coverage, has_lesion, hidden=hidden)
    now.update(cam=cam, what_ifs=what_ifs, road={})
    if fragment_rerun():
        now["road"] = faithfulness_after_paint(faith_slot, data, cam, labels)
    else:
        now["faith_slot"] = faith_slot
    return now


@st.fragment
def lesion_view(base, has_lesion: bool) -> None:
    st.header("Lesion outline and measurements", divider="gray")
    view.lesion_section(base, has_lesion)


@st.fragment
def feature_maps(data: bytes, base, layers: list[str], image_key: str) -> None:
    st.header("Feature maps", divider="gray")
    st.caption("What individual channels of a layer respond to: its most active channels, strongest first "
               "(ch = channel number, then its mean activation).")
    view.feature_maps_section(data, base, layers, image_key)


st.title("Analyse a dermoscopic image")
st.caption("Research and teaching tool — not a medical device. Do not use for diagnosis.")

view.keep_choices()
warm_up()  # the model loads in the background while the inputs are drawn; stops with instructions if none
source = choose_source()
tta = st.toggle("Test-time augmentation (average over 4 flipped views)", key="tta",
                help="Slower; reports how much the answer changes when the image is flipped.")
if source is None:
    st.info("Upload a dermoscopic image, or pick one of the bundled examples.")
    at_a_glance(bundle_metas()[0])
    st.stop()
loaded = get_loaded()  # stops the page with instructions when the model cannot be used

try:
    # ask for the feature maps the page will show, so a new image costs one network pass
    fmap_layer = st.session_state.get("fmap_layer")
    base = analyse(source.data, tta=tta,
                   feature_layer=fmap_layer if fmap_layer in loaded.analyzer.layers else loaded.analyzer.layers[-1])
except ImageError as e:
    st.error(f"This file cannot be analysed: {e}", icon=":material/broken_image:")
    st.stop()
except Exception as e:  # noqa: BLE001 - a bug must not show a traceback to a clinician
    logging.getLogger(__name__).exception("analysis failed")
    st.error(f"The analysis failed unexpectedly ({type(e).__name__}). The details are in the server log.")
    st.stop()

st.divider()
image_key = sha256(source.data)[:12]
shown = view.summary(base, source.name, image_key)  # False: the gate hides the model's output (issue 26.1)
if source.original:
    st.caption(f"File name as uploaded: {md_escape(source.original)} (invisible or direction-changing characters removed "
               "from the name shown and written).")
truth = None
if source.example is not None:
    try:
        split, known = training_split_of(str(source.example.get("image_id"))), True
    except LookupError:
        split, known = None, False
    truth = view.ground_truth(source.example, split, known, base.top_class if shown else None)

st.header("Prediction set and similar confirmed cases", divider="gray")
aids_section(base, int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE)), image_key, hidden=not shown)

labels = cam_method_labels()
has_lesion = view.lesion_found(base, thresholds()["min_lesion_pct"])
explained = explanations(source.data, base, loaded.analyzer.layers, labels, image_key, has_lesion,
                         loaded.analyzer.heat_limits, not shown,
                         randomisation_failures(loaded.analyzer.classifier.meta.get("interpretability")),
                         int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE)), now={})

st.header("7-point checklist: what the model sees, in dermoscopic criteria", divider="gray")
checklist_panel(base)

lesion_view(base, has_lesion)
feature_maps(source.data, base, loaded.analyzer.layers, image_key)

st.header("Details and report", divider="gray")
view.details(base, loaded.load_seconds, loaded.device)


stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.name).stem)[:60] or "image"
explained["road"] = faithfulness_after_paint(explained.pop("faith_slot"), source.data, explained["cam"], labels)
coverage = int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE))


def _report() -> str:  # everything shown, under the page's headings (tests/test_app.py compares the two)
    cam, road, what_ifs = explained["cam"], explained["road"], explained["what_ifs"]  # as the fragment left them
    return build_case_report(base, file_name=source.name, image_sha256=sha256(source.data), shown=Shown(
        cams=cam["cams"], cam_class=cam["cam_class"], cam_layer=cam["cam_layer"], attention=cam["attention"],
        method_labels=labels, opacity=cam["opacity"], heat_warning=cam.get("warning"), road=road,
        heat=cam.get("heat", {}), heat_notes=cam.get("notes", {}),
        coverage=coverage, ground_truth=truth,
        lesion_found=has_lesion, output_shown=shown, what_ifs=what_ifs))


st.session_state[REPORT_KEY] = _report
st.download_button("Download case report (HTML)", data=_report, file_name=f"case-report-{stem}.html",
                   mime="text/html", on_click="ignore", icon=":material/download:", key="report", type="primary")

