"""Batch review: classify many images (or a .zip), sort and flag them, open one in Analyse,
export CSV, and score against a labels table when one is given."""
from __future__ import annotations

import logging

import streamlit as st

from app.widgets.upload import UPLOAD_TYPES, hand_over
from app.batch.aids import add_set_columns, json_export, set_coverage
from model.data.checklist import CRITERIA
from app.widgets.tables import classify_items, gather, results_frame, score
from app.widgets.components import md_escape
from app.widgets.csv_export import safe_csv
from app.resources import get_loaded, model_key
from app.widgets.sidebar import COVERAGE_KEY
from model.aids.conformal import DEFAULT_COVERAGE
from model.data.tables import DatasetError, parse_labels_table
from model.evaluation.report import confusion_figure, per_class_table

STATE_KEY = "batch_results"

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
if not files:
    st.info("Upload images or a .zip archive to classify them.")
    st.stop()

signature = (tuple(f.file_id for f in files), tta, model_key())
state = st.session_state.get(STATE_KEY)
if state is None or state["signature"] != signature:
    items = gather([(f.name, f.getvalue()) for f in files])
    bar = st.progress(0.0, text=f"Classifying {len(items.images)} images…")
    preds = classify_items(loaded.analyzer, items.images, tta, progress=lambda done, total: bar.progress(
        done / total, text=f"Classified {done} of {total} images"))
    bar.empty()
    state = {"signature": signature, "preds": preds, "skipped": items.skipped}
    st.session_state[STATE_KEY] = state

preds, skipped = state["preds"], state["skipped"]
if skipped:
    with st.expander(f"{len(skipped)} archive members or files skipped"):
        st.dataframe([{"file": n, "reason": why} for n, why in skipped], hide_index=True)
if not preds:
    st.warning("No images to classify in the upload.")
    st.stop()

coverage = int(st.session_state.get(COVERAGE_KEY, DEFAULT_COVERAGE))
try:  # labels for the set columns and exports; problems with the file are reported below
    labels = parse_labels_table(labels_file.getvalue(), name=labels_file.name) if labels_file is not None else None
except DatasetError:
    labels = None
set_summary = set_coverage(preds, labels, classes, coverage) if labels else None
df = add_set_columns(results_frame(preds, classes), preds, coverage, labels)
n_flagged = int((df["flags"] != "").sum())
n_mel = int((df["melanoma flag"] == "FLAG").sum())
st.markdown(f"**{len(df)} images** · {n_flagged} with quality or confidence flags · {n_mel} with the melanoma flag "
            "(P(melanoma) over the threshold chosen on validation for 90% sensitivity). Click a column header to sort; "
            "select a row to open it in the Analyse page.")
criteria = [c.label for c in CRITERIA]   # each criterion's estimated presence (concept probes)
shown = df.assign(**{c: df[c] * 100 for c in ("probability", "malignant probability", *criteria)})
pct = st.column_config.NumberColumn(format="%.1f %%")
event = st.dataframe(
    shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="batch_table",
    column_order=["file", "top class", "probability", "prediction set", "malignant probability", "melanoma flag",
                  "7-point score", "entropy", "flags", "kNN vote", "notes", "label", "label in set", *criteria],
    column_config={"probability": pct, "malignant probability": pct, **{c: pct for c in criteria},
                   "7-point score": st.column_config.NumberColumn(
                       format="%d", help="From the concept probes: major criteria 2 points, minor 1; 3 or more "
                                         "suggests melanoma (the Model card gives how well each criterion is read)"),
                   "entropy": st.column_config.NumberColumn(format="%.2f", help="0 certain, 1 uniform"),
                   "flags": st.column_config.TextColumn(width="medium"),
                   "prediction set": st.column_config.TextColumn(
                       help=f"Conformal prediction set at {coverage}% coverage (sidebar)"),
                   "notes": st.column_config.TextColumn(help="Conversions made while decoding the file")})
rows = event.selection.rows if event is not None else []
c1, c2, c3 = st.columns(3)
if rows:
    name = df.iloc[rows[0]]["file"]
    if c1.button(f"Open {name} in Analyse", type="primary", icon=":material/biotech:"):
        data = dict(gather([(f.name, f.getvalue()) for f in files]).images).get(name)
        if data is not None:
            hand_over(name, data)
            st.switch_page("analyse/page.py")
c2.download_button("Download table (CSV)", safe_csv(df), file_name="batch-review.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:")
c3.download_button("Download table (JSON)", json_export(df, coverage, set_summary), file_name="batch-review.json",
                   mime="application/json", on_click="ignore", icon=":material/download:")

if labels_file is not None:
    st.header("Agreement with the labels", divider="gray")
    try:
        labels = parse_labels_table(labels_file.getvalue(), name=labels_file.name)
        scored = score(preds, labels, classes)
    except DatasetError as e:
        st.error(f"The labels file cannot be used: {md_escape(e, 600)}", icon=":material/table_rows:")
        st.caption("The image results above do not depend on it. Expected: HAM10000 metadata (columns "
                   "image_id, dx) or an ISIC 2018 GroundTruth.csv (image and one column per class).")
        st.stop()
    except Exception as e:  # noqa: BLE001 - a bug must not show a traceback to a clinician
        logging.getLogger(__name__).exception("scoring against the labels failed")
        st.error(f"The labels could not be scored ({type(e).__name__}). The details are in the server log; "
                 "the image results above are unaffected.")
        st.stop()
    if scored.unknown_labels:
        st.warning(f"{len(scored.unknown_labels)} labels are not classes of this model and were left out.")
    if scored.report is None:
        st.warning("No uploaded image matched a row of the labels file (matching is by file name "
                   "without extension).")
        st.stop()
    rep = scored.report
    st.caption(f"{scored.matched} labelled images scored; {len(scored.unmatched)} images had no label.")
    m1, m2, m3 = st.columns(3)
    m1.metric("Accuracy", f"{rep['accuracy']:.1%}")
    m2.metric("Balanced accuracy", f"{rep['balanced_accuracy']:.1%}", help="Mean recall over classes present.")
    if rep.get("melanoma_sensitivity") is not None:
        m3.metric("Melanoma sensitivity", f"{rep['melanoma_sensitivity']:.1%}")
    left, right = st.columns([1, 1.2])
    left.dataframe([{k: r[k] for k in ("name", "support", "recall", "precision")} for r in per_class_table(rep)],
                   hide_index=True, column_config={"name": st.column_config.TextColumn("class", width="large")})
    right.plotly_chart(confusion_figure(rep["confusion_matrix"], classes,
                                        title="Confusion matrix (rows: label, share of row)"), key="batch_cm")
    if set_summary is not None:
        st.metric(f"Prediction-set coverage (target {coverage}%)", f"{set_summary['coverage']:.1%}",
                  help=f"Share of the {set_summary['n']} labelled images whose label is in their conformal set; "
                       f"mean set size {set_summary['mean_set_size']:.2f}, single-class sets "
                       f"{set_summary['singleton_share']:.0%}.")
    if scored.matched < 30:
        st.caption(f"Only {scored.matched} images: these figures are very uncertain.")
    if scored.unmatched:
        with st.expander("Images without a label"):
            st.write(", ".join(md_escape(n) for n in scored.unmatched))
