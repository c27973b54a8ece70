"""Model card: the heat warning's thresholds, and how the artefact detector and the colour rules agree
with labels set by eye. Every figure is read from meta.json as the command that measured it stored it."""
from __future__ import annotations

import streamlit as st

from app.meta import dig, num, pct

PARTS = {"holdout": "held out (never tuned on)", "tune": "tuning part", "all": "all"}


def heat_warning_rows(meta: dict) -> list[dict] | None:
    fig = dig(meta, "interpretability", "heat_warning", default=None)
    if not isinstance(fig, dict) or not isinstance(fig.get("per_method"), dict):
        return None
    return [{"method": m, "images": r.get("n"), "median share off the lesion": pct(r.get("off_lesion_median")),
             "warns above (90th percentile)": pct(r.get("off_lesion_p90")),
             "mean share on artefacts": pct(r.get("artefacts_mean")),
             "images with > 10% on artefacts": pct(r.get("images_with_heat_on_artefacts_over_10pct"))}
            for m, r in fig["per_method"].items() if isinstance(r, dict)]


def heat_warning_section(meta: dict) -> None:
    rows = heat_warning_rows(meta)
    if rows is None:
        st.info("The heat warning is not set for this classifier (`python -m model.cli.heat_warning BUNDLE --data DIR`).")
        return
    fig = meta["interpretability"]["heat_warning"]
    st.markdown("**The heat warning.** On the Analyse page a heatmap gets a warning when more of its heat lies off "
                "the lesion than on 9 in 10 test images for the same method. Each method has its own threshold, "
                "because their heat spreads differently; the warning flags an unusual heatmap, not a wrong answer.")
    st.caption(f"Top class, layer `{fig.get('layer', '?')}`, {fig.get('mask', '?')}; {fig.get('split', '?')} split "
               f"(`{fig.get('command', 'python -m model.cli.heat_warning')}`).")
    st.table(rows, border="horizontal")


def agreement_rows(fig: dict, what: str, part: str) -> list[dict]:
    rows = []
    for name, r in (dig(fig, what, part, default={}) or {}).items():
        row = {("artefact" if what == "artefacts" else "colour"): name, "labelled present": f"{r.get('labelled_present', '?')} of {r.get('n', '?')}"}
        if what == "artefacts":
            row.update(precision=num(r.get("precision"), 2), recall=num(r.get("sensitivity"), 2))
        else:
            row.update(sensitivity=num(r.get("sensitivity"), 2), specificity=num(r.get("specificity"), 2),
                       **{"balanced accuracy": num(r.get("balanced_accuracy"), 2)})
        rows.append(row)
    return rows


def rule_agreement_section(meta: dict) -> None:
    fig = meta.get("rule_agreement")
    if not isinstance(fig, dict):
        st.info("Not measured (`python -m model.cli.label_agreement BUNDLE`).")
        return
    st.markdown(f"The artefact detector (ink, rulers, dark vignette corners, hair) and the colour rules are image "
                f"rules, not learned. They were checked against labels set by eye on {fig.get('n_images', '?')} "
                f"HAM10000 images ({fig.get('n_colour_labelled', '?')} of them for colour), split into a part the "
                "rules were set on and a held-out part. Colours are read inside the dataset's own lesion masks.")
    part = st.radio("Images", list(PARTS), format_func=PARTS.get, horizontal=True, key="rule_part")
    left, right = st.columns(2)
    left.markdown("**Artefacts** (image-level call)")
    left.table(agreement_rows(fig, "artefacts", part), border="horizontal")
    right.markdown("**Dermoscopic colours**")
    right.table(agreement_rows(fig, "colours", part), border="horizontal")
    st.caption(f"`{fig.get('command', 'python -m model.cli.label_agreement')}` · labels {fig.get('labels', '?')} "
               f"(sha256 {fig.get('labels_sha256', '?')}) · docs/artefacts-and-colours.md. A small set labelled by "
               "one non-dermatologist: a check of the rules, not a validation.")
    external_colour_section(fig.get("derm7pt"))


def external_colour_rows(external: dict, part: str = "report") -> list[dict]:
    return [{"colour": name, "labelled present": f"{r.get('labelled_present', '?')} of {r.get('n', '?')}",
             "said present": r.get("said_present"), "sensitivity": num(r.get("sensitivity"), 2),
             "specificity": num(r.get("specificity"), 2), "balanced accuracy": num(r.get("balanced_accuracy"), 2)}
            for name, r in (dig(external, "parts", part, default={}) or {}).items() if isinstance(r, dict)]


def external_colour_section(external) -> None:
    """White and blue-gray against dermatologists' structure labels from another clinic (Derm7pt)."""
    if not isinstance(external, dict):
        return
    st.markdown("**Against dermatologists' labels from another clinic** (Derm7pt, its `report` images; the colour "
                "rules were never set on Derm7pt). Derm7pt scores structures, not colours, and two of them name a "
                "colour: white is labelled present where regression shows white scar-like areas (alone or with "
                "blue areas), blue-gray where regression shows blue areas or the lesion has a blue-whitish veil. "
                "Here the colours are read inside the app's own outline, as the Analyse page shows them.")
    st.table(external_colour_rows(external), border="horizontal")
    st.caption("Low sensitivity means the page often leaves out a white or blue-gray area a dermatologist sees: "
               "do not read a missing colour as its absence. Derm7pt: Kawahara et al., IEEE JBHI 2019 "
               "(CC BY-NC-ND 4.0).")
