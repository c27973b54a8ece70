"""Batch review's parts: the labels file (parsed once per upload), the review table (gated rows
show as gated) and the agreement with the labels (on the images the gate passed, and on all)."""
from __future__ import annotations

import logging

import streamlit as st

from app.widgets.components import md_escape
from app.widgets.tables import score
from model.data.checklist import CRITERIA
from model.data.tables import DatasetError, parse_labels_table
from model.evaluation.report import confusion_figure, per_class_table

CRITERIA_COLUMNS = tuple(c.label for c in CRITERIA)   # each criterion's estimated presence (concept probes)
HIDDEN_COLUMNS = ("probability", "malignant probability", "melanoma flag", "prediction set", "kNN vote", "entropy",
                  "7-point score", *CRITERIA_COLUMNS)


def labels_of(labels_file, images: int, before: dict | None) -> dict:
    """{"file_id", "labels" or None, "error" or None}: the file parsed once per upload (a rerun
    reuses it), reading only its image and diagnosis columns; a table with far more rows than
    images is refused unread."""
    if before is not None and before.get("file_id") == labels_file.file_id and before.get("images") == images:
        return before
    try:
        labels, error = parse_labels_table(labels_file.getvalue(), name=labels_file.name, images=images), None
    except DatasetError as e:
        labels, error = None, str(e)
    return {"file_id": labels_file.file_id, "images": images, "labels": labels, "error": error}


def review_table(df, coverage: int) -> str | None:
    """The sortable table; the file name of the selected row, if any."""
    n_gated = int((df["gated"] == "yes").sum())
    n_flagged = int((df["flags"] != "").sum())
    n_mel = int((df["melanoma flag"] == "FLAG").sum())
    st.markdown(f"**{len(df)} images** · {n_gated} gated (answer withheld: the image is unlike what the model can "
                f"judge) · {n_flagged} with quality or confidence flags · {n_mel} with the melanoma flag (P(melanoma) "
                "over the threshold chosen on validation for 90% sensitivity). Click a column header to sort; select "
                "a row to open it in the Analyse page.")
    shown = df.assign(**{c: df[c] * 100 for c in ("probability", "malignant probability", *CRITERIA_COLUMNS)})
    if n_gated and not st.toggle(f"Show the withheld answers of the {n_gated} gated images", key="batch_show_gated"):
        gated = shown["gated"] == "yes"
        for c in HIDDEN_COLUMNS:
            shown[c] = shown[c].astype(object).where(~gated, None)
    pct = st.column_config.NumberColumn(format="%.1f %%")
    order = ["file", "top class", "probability", "prediction set", "malignant probability", "melanoma flag",
             "7-point score", "entropy", "flags", "kNN vote", "label", "label in set", "notes", "original name",
             *CRITERIA_COLUMNS]
    event = st.dataframe(
        shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="batch_table",
        column_order=[c for c in order if c in shown.columns],
        column_config={"probability": pct, "malignant probability": pct, **{c: pct for c in CRITERIA_COLUMNS},
                       "7-point score": st.column_config.NumberColumn(
                           format="%d", help="From the concept probes: major criteria 2 points, minor 1; 3 or more "
                                             "suggests melanoma (the Model card gives how well each is read)"),
                       "entropy": st.column_config.NumberColumn(format="%.2f", help="0 certain, 1 uniform"),
                       "flags": st.column_config.TextColumn(width="medium"),
                       "prediction set": st.column_config.TextColumn(
                           help=f"Conformal prediction set at {coverage}% coverage (sidebar)"),
                       "kNN vote": st.column_config.TextColumn(help="Majority class of the most similar confirmed "
                                                                    "cases"),
                       "label in set": st.column_config.TextColumn(help="Whether the label is in the prediction set"),
                       "notes": st.column_config.TextColumn(help="Conversions made while decoding the file"),
                       "original name": st.column_config.TextColumn(
                           help="The file name as uploaded, where it held invisible or direction-changing characters "
                                "that were removed")})
    rows = event.selection.rows if event is not None else []
    return str(df.iloc[rows[0]]["file"]) if rows else None


def agreement_section(preds, labels_state: dict, classes, set_summary: dict | None, coverage: int) -> None:
    st.header("Agreement with the labels", divider="gray")
    if labels_state.get("error"):
        st.error(f"The labels file cannot be used: {md_escape(labels_state['error'], 600)}",
                 icon=":material/table_rows:")
        st.caption("The image results above do not depend on it. Expected: HAM10000 metadata (columns "
                   "image_id, dx) or an ISIC 2018 GroundTruth.csv (image and one column per class).")
        return
    labels = labels_state["labels"]
    try:
        passed, everything = score([p for p in preds if not p.gated], labels, classes), score(preds, labels, classes)
    except Exception as e:  # noqa: BLE001 - a bug must not show a traceback to a clinician
        logging.getLogger(__name__).exception("scoring against the labels failed")
        st.error(f"The labels could not be scored ({type(e).__name__}). The details are in the server log; "
                 "the image results above are unaffected.")
        return
    if everything.unknown_labels:
        st.warning(f"{len(everything.unknown_labels)} labels are not classes of this model and were left out.")
    if everything.report is None:
        st.warning("No uploaded image matched a row of the labels file (matching is by file name "
                   "without extension).")
        return
    scores_block(passed, everything, classes)
    if set_summary is not None:
        st.metric(f"Prediction-set coverage (target {coverage}%), gate passed", f"{set_summary['coverage']:.1%}",
                  help=f"Share of the {set_summary['n']} labelled images the gate passed whose label is in their "
                       f"conformal set; mean set size {set_summary['mean_set_size']:.2f}, single-class sets "
                       f"{set_summary['singleton_share']:.0%}.")
    if everything.unmatched:
        with st.expander("Images without a label"):
            st.write(", ".join(md_escape(n) for n in everything.unmatched))


def scores_block(passed, everything, classes) -> None:
    """Accuracy on the images the gate passed (the answers a clinician sees) and on all images."""
    gated = everything.matched - passed.matched
    st.caption(f"{everything.matched} labelled images scored: {passed.matched} passed the gate, {gated} gated; "
               f"{len(everything.unmatched)} images had no label.")
    for title, scored in ((f"Gate passed ({passed.matched} images)", passed),
                          (f"All images, gated ones included ({everything.matched})", everything)):
        rep = scored.report
        m0, m1, m2, m3 = st.columns([1.4, 1, 1, 1])
        m0.markdown(f"**{title}**")
        if rep is None:
            m1.caption("no labelled image")
            continue
        m1.metric("Accuracy", f"{rep['accuracy']:.1%}")
        m2.metric("Balanced accuracy", f"{rep['balanced_accuracy']:.1%}", help="Mean recall over classes present.")
        if rep.get("melanoma_sensitivity") is not None:
            m3.metric("Melanoma sensitivity", f"{rep['melanoma_sensitivity']:.1%}")
    rep = (passed.report or everything.report)
    st.dataframe([{k: r[k] for k in ("name", "support", "recall", "precision")} for r in per_class_table(rep)],
                 hide_index=True, width="stretch",
                 column_config={"name": st.column_config.TextColumn("class", width="medium"),
                                "recall": st.column_config.NumberColumn(format="%.2f"),
                                "precision": st.column_config.NumberColumn(format="%.2f")})
    st.plotly_chart(confusion_figure(rep["confusion_matrix"], classes,
                                     title="Confusion matrix, " + ("gate passed" if passed.report else "all images")
                                     + " (rows: label, share of row)"), key="batch_cm")
    if everything.matched < 30:
        st.caption(f"Only {everything.matched} images: these figures are very uncertain.")
