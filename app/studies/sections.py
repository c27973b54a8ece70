"""The Review page's sections: create a study, open one, the blind read, the after read and the
results. Widgets in, calls to review.Store out; every user text is shown escaped."""
from __future__ import annotations

import json
import logging
import uuid

import pandas as pd
import streamlit as st

from app.widgets.upload import UPLOAD_TYPES
from app.widgets.components import md_escape, percent
from app.widgets.csv_export import safe_csv
from app.resources import example_bytes, load_examples
from app.studies.cases import build_cases
from app.studies.figures import accuracy_figure, changes_figure, heatmap_figure
from model.labels import display_name
from review import Store, StoreError
from review.stats import EXPORT_COLUMNS, accuracy, export_rows, heatmap_ratings, per_class
from review.store import AIDS, ARTEFACTS, DEFAULT_AIDS, RATINGS

AID_LABELS = {"prediction_set": "Prediction set (conformal)", "similar_cases": "Similar confirmed cases",
              "checklist": "7-point checklist (concept probes)"}

OPEN_KEY = "review_open"        # {"study_id", "reader_id"} once a code and a name were accepted
NEW_CODE_KEY = "review_new_code"  # the code of a study this session just created, shown once
CONFIRM_KEY = "Ctrl+Enter"       # confirms the form on screen (Cmd+Enter on a Mac: Streamlit maps it)
KEYBOARD_HINT = ("Keyboard: Tab moves between questions, arrow keys choose, Enter on the button confirms; "
                 "Ctrl+Enter (⌘+Enter) confirms too whenever no answer field has the focus.")
CONFIDENCE = {1: "1 · guess", 2: "2", 3: "3 · fairly sure", 4: "4", 5: "5 · certain"}


def dx_label(code: str) -> str:
    return "Unsure" if code == "unsure" else f"{display_name(code)} ({code})"


def create_form(store: Store, classes: list[str], versions: dict[str, str]) -> None:
    """Name, images (examples, uploads, .zip), optional labels, options; creates the study."""
    from model.data.tables import parse_labels_table
    from model.data.dataset import DatasetError

    with st.form("review_create_form"):
        name = st.text_input("Study name", key="rc_name", max_chars=200)
        use_examples = st.checkbox(f"Include the {len(load_examples())} bundled example images", key="rc_examples")
        files = st.file_uploader("Images, or .zip archives of images", type=UPLOAD_TYPES + ["zip"],
                                 accept_multiple_files=True, key="rc_files")
        labels_file = st.file_uploader("Optional labels (HAM10000 metadata.csv or ISIC 2018 GroundTruth.csv)",
                                       type=["csv"], key="rc_labels")
        teaching = st.checkbox("Teaching mode: show the true diagnosis after each blind read", key="rc_teaching")
        aids = st.multiselect("Decision aids shown at the reveal (beside probabilities, heatmaps, outline and "
                              "feature maps); each read records which ones its reader saw",
                              list(AIDS), default=list(DEFAULT_AIDS), format_func=AID_LABELS.get, key="rc_aids")
        keep = st.checkbox("Store the images themselves in the database (default: only their hashes and "
                           "thumbnails; readers then need the bundled examples or the same files)", key="rc_keep")
        submitted = st.form_submit_button("Create study", type="primary")
    if not submitted:
        return
    labels = None
    if labels_file is not None:
        try:
            labels = parse_labels_table(labels_file.getvalue(), name=labels_file.name)
        except DatasetError as e:
            st.error(f"The labels file cannot be used: {md_escape(e, 600)}. Create the study without it, or fix it.")
            return
    examples = [(r, example_bytes(r)) for r in load_examples()] if use_examples else []
    cases, skipped = build_cases([(f.name, f.getvalue()) for f in files or []], examples, labels, classes)
    if not cases:
        if skipped:
            st.dataframe([{"file": n, "reason": why} for n, why in skipped], hide_index=True)
        st.error("No readable image to put in the study: tick the bundled examples or upload images.")
        return
    study, code = store.create_study(name or "Untitled study", cases, classes=classes, store_images=keep,
                                     teaching=teaching, model_versions=versions, aids=aids)
    st.session_state[NEW_CODE_KEY] = {"code": code, "name": study["name"], "n": len(cases), "skipped": skipped}
    st.rerun()


def show_new_code(store: Store) -> None:
    """Once, to the study's organiser who just created it: the access code, and where the study is
    stored (shown to nobody else: visitors of the page never see the database's location)."""
    new = st.session_state.pop(NEW_CODE_KEY, None)
    if not new:
        return
    st.session_state["review_mode"] = "Open a study"  # before that radio is drawn: next, open it
    st.success(f"Study **{md_escape(new['name'])}** created with {new['n']} cases. Its access code is below: "
               "copy it now, it is shown only once and cannot be recovered. Anyone with it can read the study "
               "and its results.", icon=":material/key:")
    st.code(new["code"], language=None)
    st.caption(f"The study is stored in {md_escape(store.where, 300)} (schema version {store.version}).")
    if new.get("skipped"):
        with st.expander(f"{len(new['skipped'])} files skipped or changed"):
            st.dataframe([{"file": n, "reason": why} for n, why in new["skipped"]], hide_index=True)


ACCESS_KEY = "review_access"   # this session's wrong-code count and when it may try again


def open_form(store: Store, limiter) -> None:
    """Access code + reader name -> the study opens for this session (after a growing wait when
    codes were wrong: app.studies.access)."""
    with st.form("review_open_form"):
        code = st.text_input("Access code", type="password", key="ro_code")
        reader = st.text_input("Your name (as reader)", key="ro_reader", max_chars=100,
                               help="Reads are kept per name: use the same name to continue where you stopped.")
        go = st.form_submit_button("Open study", type="primary")
    if not go:
        return
    access = st.session_state.setdefault(ACCESS_KEY, {})
    wait = limiter.wait(access)
    if wait > 0:
        st.error(f"Too many wrong access codes: wait {wait:.0f} s, then try again. The code was not checked.",
                 icon=":material/timer:")
        return
    study = store.open_study(code)
    if study is None:
        limiter.failed(access, session_id())
        st.error("No study has this access code. Check it (it is case-sensitive), or create a new study."
                 + (" After several wrong codes each try waits longer." if access.get("failures", 0) >= 2 else ""))
        return
    limiter.succeeded(access)
    try:
        r = store.reader(study["id"], reader)
    except StoreError as e:
        st.error(str(e))
        return
    # a fresh `opening` for every opening: the page's widgets of an earlier opening (its "Show" radio)
    # are new widgets then, so the browser cannot show one view while the server draws another
    st.session_state[OPEN_KEY] = {"study_id": study["id"], "reader_id": r["id"], "opening": uuid.uuid4().hex[:8]}
    st.rerun()


def session_id() -> str:
    """A short, non-secret name of this browser session for the log."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    ctx = get_script_run_ctx()
    return ctx.session_id[:8] if ctx is not None else "?"


LOST_CONFIRM = {"bok": "Your blind read was not saved: this case's blind read had already been confirmed in "
                       "another tab, and that first answer is kept.",
                "fok": "Your after read was not saved: this case had already been finished in another tab, and "
                       "the first answer is kept."}


def lost_confirm(case_key: str, stage: str) -> str | None:
    """The notice for a confirm clicked in this tab on a form this run no longer shows (another tab of
    the same reader moved on first), else None. `stage` is the form shown now: 'blind' or 'after'."""
    shown = ("bok" if stage == "blind" else "fok", case_key)
    for k, v in st.session_state.to_dict().items():
        if v is True and isinstance(k, str) and k[:4] in ("bok_", "fok_") and (k[:3], k[4:]) != shown:
            return LOST_CONFIRM[k[:3]]
    return None


def blind_form(case: dict, data: bytes, classes: list[str], key: str) -> dict | None:
    """The image alone; diagnosis, confidence, biopsy. Returns the answers when confirmed."""
    left, right = st.columns([1.3, 1], gap="large")
    left.image(data, caption=f"Case {case['position'] + 1} (file name hidden until the reveal)", width="stretch")
    with right.form(f"blind_{key}"):
        st.markdown("**Blind read** — your diagnosis before seeing the AI")
        dx = st.radio("Diagnosis", [*classes, "unsure"], index=None, format_func=dx_label, key=f"bdx_{key}")
        conf = st.select_slider("Confidence", options=list(CONFIDENCE), value=3, format_func=CONFIDENCE.get,
                                key=f"bconf_{key}")
        biopsy = st.checkbox("Would biopsy / excise", key=f"bbio_{key}")
        ok = st.form_submit_button("Confirm blind read", type="primary", key=f"bok_{key}", shortcut=CONFIRM_KEY)
        st.caption(KEYBOARD_HINT)
    if ok and dx is None:
        right.warning("Pick a diagnosis (or Unsure) first.")
        return None
    return {"dx": dx, "confidence": int(conf), "biopsy": biopsy} if ok else None


def after_form(read: dict, classes: list[str], methods: list[str], labels: dict[str, str], key: str) -> dict | None:
    """Final diagnosis, did the AI change it, a rating per heatmap shown, a note."""
    with st.form(f"after_{key}"):
        st.markdown(f"**After read** — your blind read was **{dx_label(read['blind_dx'])}** "
                    f"(confidence {read['blind_confidence']}{', would biopsy' if read['blind_biopsy'] else ''})")
        options = [*classes, "unsure"]
        c1, c2 = st.columns(2)
        dx = c1.radio("Final diagnosis", options, index=options.index(read["blind_dx"]), format_func=dx_label,
                      key=f"fdx_{key}")
        changed = c2.radio("Did the AI change your diagnosis or your plan?", ["No", "Yes"], horizontal=True,
                           key=f"fchg_{key}")
        biopsy = c2.checkbox("Would biopsy / excise", value=bool(read["blind_biopsy"]), key=f"fbio_{key}")
        rated = []
        for m in methods:
            r1, r2 = st.columns([2, 1])
            rating = r1.radio(f"Where is the {labels.get(m, m)} heatmap?", RATINGS, index=None, horizontal=True,
                              key=f"frate_{key}_{m}")
            artefact = r2.selectbox("Artefact (if on one)", ARTEFACTS, index=None, key=f"fart_{key}_{m}")
            rated.append({"method": m, "rating": rating, "artefact": artefact if rating == "on an artefact" else None})
        note = st.text_area("Note (optional)", key=f"fnote_{key}", max_chars=4000, height=80)
        ok = st.form_submit_button("Confirm and go to the next case", type="primary", key=f"fok_{key}",
                                   shortcut=CONFIRM_KEY)
        st.caption(KEYBOARD_HINT)
    if not ok:
        return None
    return {"dx": dx, "changed": changed == "Yes", "biopsy": biopsy, "heatmaps": rated, "note": note}


def results(store: Store, study: dict, labels: dict[str, str]) -> None:
    """Progress, accuracy before/after the AI and the AI's own, changes, per class, heatmap ratings, export."""
    reads = store.reads(study["id"])
    cases = store.cases(study["id"])
    readers = store.readers(study["id"])
    finished = [r for r in reads if r.get("final_at")]
    st.markdown(f"{len(cases)} cases · {len(readers)} readers · {len(finished)} finished reads "
                f"({len(reads) - len(finished)} blind reads waiting for the after read)")
    if readers:
        st.dataframe([{"reader": d["name"], "finished": sum(r["reader_id"] == d["id"] for r in finished),
                       "of": len(cases)} for d in readers], hide_index=True)
    acc = accuracy(reads)
    if acc and acc[-1].get("ai_gated"):
        st.caption(f"The gate withheld the AI's answer on {acc[-1]['ai_gated']} of {acc[-1]['n']} labelled reads: "
                   "those are not counted as AI answers (the 'AI alone' bars use the other "
                   f"{acc[-1]['ai_n']}); the export's ai_gated column marks them.")
    if acc:
        st.plotly_chart(accuracy_figure(acc, "reader", "Accuracy on labelled cases"), key="rv_acc", theme=None)
        st.plotly_chart(changes_figure(acc), key="rv_changes", theme=None)
        pc = per_class(reads, study["classes"])
        st.plotly_chart(accuracy_figure(pc, "class", "Accuracy by true class"), key="rv_class", theme=None)
        if sum(a["n"] for a in acc[:-1]) < 30:
            st.caption("Few labelled reads: these figures are very uncertain.")
    elif finished:
        st.info("No case has a known diagnosis, so there is no accuracy to show (add a labels file when creating).")
    hm = heatmap_ratings(reads)
    if hm:
        st.plotly_chart(heatmap_figure(hm, labels), key="rv_heat", theme=None)
        st.dataframe([{"method": labels.get(r["method"], r["method"]), "rated": r["rated"],
                       "on an artefact": percent(r["on_artefact"], 0),
                       "which artefacts": ", ".join(f"{k} {v}" for k, v in r["artefacts"].items()),
                       "heat on lesion (auto)": percent(r["heat_in_lesion"], 0),
                       "ROAD (mean)": "–" if r["road"] is None else f"{r['road']:+.3f}"} for r in hm], hide_index=True)
    rows = export_rows(reads, study["name"])
    frame = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    c1, c2 = st.columns(2)
    c1.download_button("Download every read (CSV)", safe_csv(frame), file_name="review-reads.csv", mime="text/csv",
                       on_click="ignore", icon=":material/download:", key="rv_csv")
    c2.download_button("Download every read (JSON)", json.dumps(rows, indent=1), file_name="review-reads.json",
                       mime="application/json", on_click="ignore", icon=":material/download:", key="rv_json")


def fail(e: Exception, what: str) -> None:
    """A clear message for a store problem; a bug goes to the log, not to the reader."""
    if isinstance(e, StoreError):
        st.error(f"{what}: {md_escape(e, 600)}")
    else:
        logging.getLogger(__name__).exception(what)
        st.error(f"{what} ({type(e).__name__}). The details are in the server log; nothing already confirmed is lost.")
    st.stop()
