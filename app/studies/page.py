"""Review page: reader studies. Create a study (examples, uploads, .zip, labels), open it with its
access code and a reader name, then per case: blind read -> reveal (the Analyse page's sections)
-> after read, each committed on confirm; progress, figures and CSV / JSON export."""
from __future__ import annotations

import streamlit as st

from app.analyse import sections as view
from app.analyse import faithfulness as faith
from app.studies import sections as rs
from app.widgets.aids import aids_section
from app.analyse.checklist import checklist_panel, checklist_seen
from app.widgets.upload import UPLOAD_TYPES
from app.widgets.tables import gather
from app.widgets.components import md_escape
from app.resources import EXAMPLES_DIR, analyse, cam_method_labels, get_loaded, sha256, thresholds
from app.studies.cases import case_bytes
from app.studies.store import get_limiter, get_store
from app.widgets.sidebar import COVERAGE_KEY
from model.aids.conformal import DEFAULT_COVERAGE
from model.data.preprocess import ImageError
from model.explain.verdicts import randomisation_failures

SUPPLIED_KEY = "review_supplied"  # sha256 -> bytes of images a reader supplied again this session
FLASH_KEY = "review_flash"        # a message for the next run (after st.rerun)

st.title("Review study")
st.caption("Reader studies and teaching: your read first, then the AI, then your final read. "
           "Research and teaching tool — not a medical device.")
loaded = get_loaded()
store = get_store()
classes, labels = loaded.analyzer.classes, cam_method_labels()
rs.show_new_code(store)
if flash := st.session_state.pop(FLASH_KEY, None):
    st.warning(flash, icon=":material/tab_duplicate:")

opened = st.session_state.get(rs.OPEN_KEY)
if opened is None:
    mode = st.radio("What to do", ["Open a study", "Create a study"], horizontal=True, key="review_mode")
    try:
        if mode == "Create a study":
            rs.create_form(store, classes, loaded.analyzer.model_info())
        else:
            rs.open_form(store, get_limiter())
    except Exception as e:  # noqa: BLE001 - shown as a message, logged
        rs.fail(e, "The study could not be created or opened")
    st.stop()

try:
    study = store.study(opened["study_id"])
    reader = next(r for r in store.readers(study["id"]) if r["id"] == opened["reader_id"])
except Exception as e:  # noqa: BLE001
    st.session_state.pop(rs.OPEN_KEY, None)
    rs.fail(e, "This study can no longer be opened")
top, close = st.columns([4, 1])
top.markdown(f"### {md_escape(study['name'])}\nReader: **{md_escape(reader['name'])}**"
             + (" · teaching mode" if study["teaching"] else ""))
if close.button("Close study", key="review_close"):
    st.session_state.pop(rs.OPEN_KEY, None)
    st.rerun()
tab = st.radio("Show", ["Read cases", "Progress and results"], horizontal=True,
               key=f"review_tab_{opened.get('opening', '')}")
if tab == "Progress and results":
    rs.results(store, study, labels)
    st.stop()

cases = store.cases(study["id"])
nxt = store.next_case(study["id"], reader["id"])
done = len(cases) if nxt is None else next(i for i, c in enumerate(cases) if c["id"] == nxt[0]["id"])
st.progress(done / len(cases), text=f"{done} of {len(cases)} cases finished")
if nxt is None:
    st.success("You have read every case of this study. Thank you! See 'Progress and results' for the figures "
               "and the export.", icon=":material/done_all:")
    st.stop()
case, read = nxt
key = case["id"][:12]
if lost := rs.lost_confirm(key, "blind" if read is None else "after"):
    st.warning(lost, icon=":material/tab_duplicate:")
supplied = st.session_state.setdefault(SUPPLIED_KEY, {})
data = case_bytes(case, store.case_image(study["id"], case["id"]) if case["has_image"] else None, EXAMPLES_DIR,
                  supplied)
if data is None:
    st.warning(f"The image of case {case['position'] + 1} ({md_escape(case['name'])}) is not stored in the study. "
               "Upload the study's images again (they are matched by content, not by name).")
    if case["thumbnail"]:
        st.image(bytes(case["thumbnail"]), caption="Thumbnail of the image needed")
    files = st.file_uploader("The study's images or .zip", type=UPLOAD_TYPES + ["zip"], accept_multiple_files=True,
                             key="review_resupply")
    for _, b in gather([(f.name, f.getvalue()) for f in files or []]).images:
        supplied[sha256(b)] = b
    if files:
        st.rerun() if case["image_sha256"] in supplied else st.error("None of these files is this case's image.")
    st.stop()

if read is None:
    answer = rs.blind_form(case, data, classes, key)
    if answer:
        try:
            kept, created = store.record_blind(study["id"], case["id"], reader["id"], answer["dx"],
                                               answer["confidence"], answer["biopsy"])
        except Exception as e:  # noqa: BLE001
            rs.fail(e, "The blind read could not be saved")
        if not created:
            st.session_state[FLASH_KEY] = (f"This blind read was already confirmed (in another tab) as "
                                           f"{rs.dx_label(kept['blind_dx'])}; that first answer is kept.")
        st.rerun()
    st.stop()

# ---------------------------------------------------------------- reveal, then the after read
if study["teaching"]:
    truth = case.get("truth")
    st.info(f"**Truth:** {rs.dx_label(truth) if truth else 'not known for this case'}", icon=":material/school:")
try:
    base = analyse(data)
except ImageError as e:
    st.error(f"This case's image cannot be analysed: {md_escape(e)}")
    st.stop()
if study["classifier_version"] and base.model_info.get("classifier") != study["classifier_version"]:
    st.warning(f"The model has changed since this study was created ({md_escape(study['classifier_version'])} then, "
               f"{md_escape(base.model_info.get('classifier'))} now). Your read records the model you see now.")
view.summary(base, case["name"])
st.header("Where the model looked", divider="gray")
limits = thresholds()
has_lesion = view.lesion_found(base, limits["min_lesion_pct"])
cam = view.cam_section(data, base, loaded.analyzer.layers, labels, sha256(data)[:12], has_lesion,
                       loaded.analyzer.heat_limits,
                       failing=randomisation_failures(loaded.analyzer.classifier.meta.get("interpretability")))
faith_slot = st.container()
# run and drawn only once opened (on_change="rerun"): the reveal does not wait for their images
outline = st.expander("Lesion outline and measurements", key=f"rv_outline_{key}", on_change="rerun")
if outline.open:
    with outline:
        view.lesion_section(base, has_lesion)
fmaps = st.expander("Feature maps", key=f"rv_fmaps_{key}", on_change="rerun")
if fmaps.open:
    with fmaps:
        view.feature_maps_section(data, base, loaded.analyzer.layers, sha256(data)[:12])
aids = study.get("aids") or []
coverage = int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE))
if aids:
    st.header("Decision aids", divider="gray")
    aids_section(base, coverage, f"review_{key}", show_set="prediction_set" in aids,
                 show_similar="similar_cases" in aids)
checklist_shown = checklist_panel(base, key=f"_review_{key}") if "checklist" in aids else None
answer = rs.after_form(read, classes, list(cam["cams"]), labels, key)
scores = faith.after_paint(faith_slot, data, cam, labels, key="review_faith")  # after the rest is drawn
if answer:
    if not scores and cam["cams"]:   # not shown at the reveal: measured now, kept with the ratings
        with st.spinner("Saving (measuring the heatmaps' faithfulness)…"):
            scores = faith.road_scores(data, cam)
    heatmaps = [{**h, "layer": cam["cam_layer"], "cam_class": cam["cam_class"],
                 "heat_in_lesion": cam["attention"].get(h["method"]),
                 "road": scores.get(h["method"], {}).get("road")} for h in answer["heatmaps"]]
    try:
        saved = store.record_final(study["id"], read["id"], final_dx=answer["dx"], biopsy=answer["biopsy"],
                                   changed_by_ai=answer["changed"], heatmaps=heatmaps, note=answer["note"],
                                   ai_top=base.top_class, ai_probability=base.top_probability,
                                   model_versions=base.model_info,
                                   aids_seen=[f"prediction_set@{coverage}%" if a == "prediction_set" else
                                              checklist_seen(base, checklist_shown) if a == "checklist" else a
                                              for a in aids],
                                   ai_gated=base.gated, ai_gate_reasons=base.quality_warnings)
    except Exception as e:  # noqa: BLE001
        rs.fail(e, "The after read could not be saved")
    if not saved:
        st.session_state[FLASH_KEY] = "This case was already finished (in another tab); the first answer is kept."
    st.rerun()
