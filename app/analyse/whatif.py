"""The Analyse page's what-if panel: known confounders (a ruler, surgical ink, hair, a dark
vignette, air bubbles) drawn on the image, or the lesion / its surroundings alone, each shown
beside the original with the probabilities, the prediction set and the heatmap. The drawing and
the classifier run behind app.resources (`what_if` -> Analyzer.what_if); no torch here."""
from __future__ import annotations

import logging

import streamlit as st

from app.resources import what_if
from app.widgets.components import heatmap_overlay, percent
from model.explain.confounders import ARTEFACTS, MASKED, NAMES, WhatIfError
from model.inference.results import Analysis
from model.labels import display_name

EXPLAIN = ("Rulers, skin markings, hair, dark corners and air bubbles are known to sway dermoscopy classifiers "
           "(skin markings raised a commercial network's scores: Winkler et al., JAMA Dermatology 2019). "
           "Each what-if is drawn the same way every time (seeded); lesion only / surroundings only use the "
           "segmentation model's outline, the other part filled from the surrounding skin. The Model card's "
           "stress test gives the same what-ifs over the whole test split.")


def probability_rows(a: Analysis, w, top: int = 4) -> list[dict]:
    """Original vs what-if probability for the classes that matter most in either, with the change."""
    order = sorted(range(len(a.classes)), key=lambda i: -max(a.probabilities[i], w.probabilities[i]))[:top]
    return [{"class": display_name(a.classes[i]), "original": percent(float(a.probabilities[i])),
             "what-if": percent(float(w.probabilities[i])),
             "change": f"{100 * float(w.probabilities[i] - a.probabilities[i]):+.2f} pts"} for i in order]


def _set_line(prediction_sets: dict, coverage: int) -> str:
    codes = prediction_sets.get(int(coverage)) if prediction_sets else None
    return "–" if codes is None else ", ".join(display_name(c) for c in codes) or "(empty)"


def _one(data: bytes, a: Analysis, cam: dict, name: str, coverage: int, method: str) -> dict | None:
    try:
        w = what_if(data, name, cam_class=cam["cam_class"], cam_layer=cam["cam_layer"], cam_method=method)
    except WhatIfError as e:
        st.info(f"{NAMES[name].capitalize()}: {e}.", icon=":material/search_off:")
        return None
    flipped = w.top_class != a.top_class
    st.markdown(f"**{NAMES[name].capitalize()}** — top class "
                + (f":red-badge[{display_name(a.top_class)} → {display_name(w.top_class)}]" if flipped
                   else f"stays {display_name(w.top_class)}")
                + f" · P({display_name(w.top_class)}) {percent(float(w.probabilities.max()))}")
    c1, c2, c3 = st.columns([1, 1, 1.3])
    original = cam["cams"].get(method)
    c1.image(heatmap_overlay(a.image, original, cam["opacity"]) if original is not None else a.image,
             caption="original", width="stretch")
    c2.image(heatmap_overlay(w.image, w.cam, cam["opacity"]), caption=f"{NAMES[name]} ({w.ms:.0f} ms)",
             width="stretch")
    with c3:
        rows = probability_rows(a, w)
        st.table(rows, border="horizontal")
        st.caption(f"Prediction set at {coverage}%: original {_set_line(a.prediction_sets, coverage)}; "
                   f"what-if {_set_line(w.prediction_sets, coverage)}.")
    return {"name": NAMES[name], "top_class": display_name(w.top_class), "rows": rows}


def panel(data: bytes, a: Analysis, cam: dict, labels: dict[str, str], coverage: int, has_lesion: bool,
          hidden: bool = False) -> list[dict]:
    """Pick what-ifs; each appears beside the original (heatmap of the first chosen method). `hidden`:
    the model's output is withheld (quality gate), so the what-ifs, which would show it, are too."""
    if hidden:
        st.info("The model's output is hidden for this image (see the quality check above), so the what-ifs, "
                "which show it, are hidden too.", icon=":material/visibility_off:")
        return []
    options = list(ARTEFACTS) + (list(MASKED) if has_lesion else [])
    picked = st.pills("Add to the image", options, selection_mode="multi", format_func=NAMES.get,
                      key="whatif_pick", help=EXPLAIN) or []
    st.caption(EXPLAIN + ("" if has_lesion else " No lesion was found, so lesion only / surroundings only are not offered."))
    methods = list(cam["cams"]) or ["gradcam"]
    method = methods[0]
    if picked:
        st.caption(f"Heatmaps: {labels.get(method, method)} for {display_name(cam['cam_class'])} at `{cam['cam_layer']}`.")
    shown = []
    for name in picked:
        try:
            shown.append(_one(data, a, cam, name, coverage, method))
        except Exception:  # noqa: BLE001 - an extra view must never break the page
            logging.getLogger(__name__).exception("what-if %s failed", name)
            st.caption(f"{NAMES[name].capitalize()} could not be computed (details in the server log).")
    return [w for w in shown if w]
