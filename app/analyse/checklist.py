"""The 7-point checklist panel (Analyse page, case report, review studies): each criterion's estimated
presence from the concept probes with its Derm7pt `report` AUROC beside it (under 0.70: greyed and
labelled unreliable), the probes' 7-point score, and where each criterion is seen."""
from __future__ import annotations

import base64
import html

import numpy as np
import streamlit as st

from app.widgets.components import fit_within, heatmap_overlay, percent, png_bytes
from model.data.checklist import PRESENT_AT, RELIABLE_AUROC, SCORE_THRESHOLD
from model.inference.results import Analysis, ChecklistReading

MAP_KEY = "checklist_map"
HOW_READ = (f"Each criterion is read from the classifier's own features by a linear probe fitted on Derm7pt images "
            f"that dermatologists scored; its AUROC on Derm7pt images never used for fitting stands beside it. "
            f"A criterion counts as present at {percent(PRESENT_AT, 0)} or more. Major criteria (pigment network, "
            f"veil, vessels) count 2 points, minor ones 1; {SCORE_THRESHOLD} or more suggests melanoma. These are "
            f"what the network's features carry, not a dermatologist's reading.")
MAP_NOTE = ("The probe applied at every position of the network's last feature map: red where the features there "
            "read as the criterion present, blue where they read as absent (the colour is the probe's probability, "
            "on the same scale for every image, so an absent criterion stays blue). The map's average is the "
            "presence above. Coarse: one cell per 32 pixels of the network's input.")


def rows(c: ChecklistReading) -> list[dict]:
    """One row per criterion: what the panel and the report show, and whether it is reliable."""
    out = []
    for i, name in enumerate(c.names):
        auc, ci = c.auroc[i], c.auroc_ci[i]
        auc_text = "not measured" if auc is None else f"{auc:.2f}" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci else "")
        out.append({"name": name, "label": c.labels[i], "points": c.weights[i],
                    "presence": percent(float(c.presence[i]), 0), "present": c.present[i],
                    "auroc": auc_text, "reliable": c.reliable[i]})
    return out


def row_markdown(r: dict) -> str:
    """A criterion's line; an unreliable one greyed and labelled."""
    mark = "present" if r["present"] else "absent"
    text = (f"**{r['label']}** ({r['points']} pt) — {r['presence']} ({mark}) · "
            f"AUROC on Derm7pt report {r['auroc']}")
    if r["reliable"]:
        return text
    return f":gray[{text.replace('**', '')} · unreliable (AUROC under {RELIABLE_AUROC:.2f})]"


def score_line(c: ChecklistReading) -> str:
    verdict = "suggests melanoma" if c.suggests_melanoma else "does not suggest melanoma"
    return f"7-point score from the probes: **{c.score}** (≥ {SCORE_THRESHOLD} suggests melanoma): {verdict}."


def concept_overlay(a: Analysis, index: int, opacity: float = 0.5) -> np.ndarray:
    """The image with criterion `index`'s map drawn over it (like a CAM)."""
    return heatmap_overlay(a.image, a.checklist.maps[index], opacity)


def checklist_panel(a: Analysis, key: str = "") -> str | None:
    """The panel; returns the criterion whose map was shown (None without probes)."""
    c = a.checklist
    if c is None:
        st.info(a.checklist_error or "This classifier has no 7-point concept probes.", icon=":material/checklist:")
        return None
    st.caption(HOW_READ)
    if a.gated:
        st.warning("The image failed the quality checks: these criteria are read from the same features as the "
                   "withheld probabilities and are no more reliable.", icon=":material/report:")
    left, right = st.columns([1.3, 1], gap="large")
    with left:
        for r in rows(c):
            st.markdown(row_markdown(r))
        st.markdown(score_line(c))
    with right:
        if c.maps is None:
            st.caption("No maps: this classifier's head cannot be followed from its last feature map.")
            return None
        name = st.selectbox("Where the model sees", c.names, key=MAP_KEY + key,
                            format_func=lambda n: c.labels[c.names.index(n)])
        i = c.names.index(name)
        st.image(concept_overlay(a, i), caption=f"{c.labels[i]}: {rows(c)[i]['presence']}", width="stretch")
        st.caption(MAP_NOTE)
    return name


def checklist_html(a: Analysis) -> str:
    """The case report's section: the table, the score and every criterion's map."""
    c = a.checklist
    if c is None:
        return f"<h2>7-point checklist</h2><p>{html.escape(a.checklist_error or 'No concept probes.')}</p>"
    e = html.escape
    body = "".join(
        f"<tr style='{'' if r['reliable'] else 'color:#999'}'><td>{e(r['label'])}</td><td>{r['points']}</td>"
        f"<td>{e(r['presence'])} ({'present' if r['present'] else 'absent'})</td><td>{e(r['auroc'])}"
        f"{'' if r['reliable'] else ' · unreliable'}</td></tr>" for r in rows(c))
    figs = "".join(
        f"<figure><img alt='{e(lab)}' src='data:image/png;base64,"
        f"{base64.b64encode(png_bytes(fit_within(concept_overlay(a, i), 320))).decode()}'>"
        f"<figcaption>{e(lab)}</figcaption></figure>" for i, lab in enumerate(c.labels)) if c.maps is not None else ""
    score = score_line(c).replace("**", "")
    return (f"<h2>7-point checklist (concept probes)</h2><p>{e(HOW_READ)}</p><table><tr><th>Criterion</th>"
            f"<th>Points</th><th>Estimated presence</th><th>AUROC on Derm7pt report</th></tr>{body}</table>"
            f"<p><b>{e(score)}</b></p>{figs}<p>{e(MAP_NOTE)}</p>")


def checklist_seen(a: Analysis, shown: str | None) -> str:
    """What a review read saw of the checklist aid, for its record (at most 100 characters): the score, the
    criterion whose map was on screen, and each criterion's presence in percent in
    model.data.checklist.NAMES order (`?` after an unreliable one)."""
    c = a.checklist
    if c is None:
        return "checklist: none (no concept probes)"
    marks = "/".join(f"{round(100 * float(p))}{'' if ok else '?'}" for p, ok in zip(c.presence, c.reliable))
    return f"checklist: score {c.score}; map {shown}; % {marks}"[:100]
