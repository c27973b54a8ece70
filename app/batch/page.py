"""Batch review: classify many images (or a .zip), sort and flag them, open one in Analyse,
export CSV, and score against a labels table when one is given.

The batch (its images, predictions and labels) stays in the session when the clinician opens an
image in Analyse and comes back, until new files are uploaded or it is cleared."""
from __future__ import annotations

import streamlit as st

from app.widgets.upload import UPLOAD_TYPES, hand_over
from app.batch.aids import add_set_columns, json_export, set_coverage
from app.batch.sections import agreement_section, labels_of, review_table
from app.widgets.tables import classify_items, gather, results_frame
from app.widgets.components import md_escape
from app.widgets.csv_export import safe_csv
from app.resources import get_loaded, model_key
from app.widgets.sidebar import COVERAGE_KEY
from model.aids.conformal import DEFAULT_COVERAGE

STATE_KEY = "batch_results"


def classify_upload(files, tta: bool) -> dict:
    """The batch state for these files: gathered, classified once (with a progress bar)."""
    items = gather([(f.name, f.getvalue()) for f in files])
    bar = st.progress(0.0, text=f"Classifying {len(items.images)} images…")
    preds = classify_items(loaded.analyzer, items.images, tta, progress=lambda done, total: bar.progress(
        done / total, text=f"Classified {done} of {total} images"))
    bar.empty()
    return {"signature": (tuple(f.file_id for f in files), tta, model_key()), "items": items, "preds": preds,
            "labels": None}


def current_batch(files, labels_file, tta: bool) -> dict | None:
    """The batch to show: the uploaded files', or the one kept from before this page was left."""
    state = st.session_state.get(STATE_KEY)
    if files:
        signature = (tuple(f.file_id for f in files), tta, model_key())
        if state is None or state["signature"] != signature:
            state = st.session_state[STATE_KEY] = classify_upload(files, tta)
        state["labels"] = (labels_of(labels_file, len(state["items"].images), state.get("labels"))
                           if labels_file is not None else None)
        return state
    if state is not None:
        c1, c2 = st.columns([4, 1])
        c1.info(f"Showing the batch classified earlier ({len(state['preds'])} images). Upload files to "
                "classify a new batch.", icon=":material/history:")
        if c2.button("Clear the batch", icon=":material/delete:"):
            del st.session_state[STATE_KEY]
            st.rerun()
        return state   # with its labels, if it had any
    return None


def report_refusals(items) -> None:
    for name, why in items.refused:
        st.error(f"**{md_escape(name)}** was not opened: {md_escape(why)}", icon=":material/folder_zip:")
    if items.skipped:
        with st.expander(f"{len(items.skipped)} archive members or files skipped"):
            st.dataframe([{"file": n, "reason": why} for n, why in items.skipped], hide_index=True)


st.title("Batch review")
st.caption("Research and teaching tool — not a medical device. Flags and probabilities are for review only.")
loaded = get_loaded()
classes = loaded.analyzer.classes

files = st.file_uploader("Images, or .zip archives of images", type=UPLOAD_TYPES + ["zip"],
                         accept_multiple_files=True, key="batch_files",
                         help="Archives are read in memory; nested archives and non-images are skipped.")
labels_file = st.file_uploader("Optional labels (HAM10000 metadata.csv or ISIC 2018 GroundTruth.csv)",
                               type=["csv"], key="batch_labels",
                               help="Rows are matched to images by file name without extension.")
tta = st.toggle("Test-time augmentation (4 flipped views, 4× slower)", key="batch_tta")
state = current_batch(files, labels_file, tta)
if state is None:
    st.info("Upload images or a .zip archive to classify them.")
    st.stop()

items, preds = state["items"], state["preds"]
report_refusals(items)
if not preds:
    st.warning("No images to classify in the upload." + (" The archive above was refused as a whole."
                                                          if items.refused else ""))
    st.stop()

coverage = int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE))
labels_state = state.get("labels")
labels = labels_state["labels"] if labels_state and labels_state.get("labels") else None
set_summary = set_coverage([p for p in preds if not p.gated], labels, classes, coverage) if labels else None
df = add_set_columns(results_frame(preds, classes, items.originals), preds, coverage, labels)
name = review_table(df, coverage)
c1, c2, c3 = st.columns(3)
if name is not None and c1.button(f"Open {name} in Analyse", type="primary", icon=":material/biotech:"):
    data = dict(items.images).get(name)
    if data is not None:
        hand_over(name, data)
        st.switch_page("analyse/page.py")
c2.download_button("Download table (CSV)", safe_csv(df), file_name="batch-review.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:")
c3.download_button("Download table (JSON)", json_export(df, coverage, set_summary), file_name="batch-review.json",
                   mime="application/json", on_click="ignore", icon=":material/download:")
if labels_state is not None:
    agreement_section(preds, labels_state, classes, set_summary, coverage)
