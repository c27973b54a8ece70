"""The Analyse page's sections, each a function: widgets in, rendered results out."""
from __future__ import annotations

import streamlit as st

from app.widgets.components import (MAP_COLOURS, colorize, runtime_line, feature_tiles, heatmap_overlay, mask_image, measurement_rows, melanoma_flag_text,
                            outline_image, percent, probability_figure)
from app.resources import analyse
from model.labels import GT_SOURCES, display_name
from app.analyse.heat_notes import HEAT_WARNING_MEANING, heat_caption, heat_warning, heat_warning_unset, outline_warning
from model.explain.attention import heat_shares
from model.explain.verdicts import FAILS
from model.inference.results import Analysis


GATE_MEANING = ("**What the flag means.** The model learned from dermoscopic photographs of one collection "
                "(HAM10000). This image differs from them in a way the checks can measure (its size, focus, "
                "colours, or what the network sees in it), so the model's accuracy on it has not been measured "
                "and may be much lower. The flag says nothing about the lesion itself: it is not a sign that the "
                "lesion is benign or malignant. A photograph from another dermatoscope or under other light is "
                "often flagged for its colours.")

PRIOR_NOTE = ("The probabilities assume the seven classes are equally common (the classifier was trained with "
              "class-balanced sampling): in a clinic, where most lesions are naevi, the chance that a lesion is "
              "malignant is lower than the malignant sum says.")


CHOICES = ("cam_methods", "cam_layer", "opacity", "fmap_layer", "mask_view", "faith_on")


def keep_choices() -> None:
    """Keep the display choices (methods, layers, opacity, faithfulness on/off) across a new upload:
    replacing the file runs the page once without an image, which stops before these widgets, and
    Streamlit drops the state of widgets a run did not draw (the six methods fell back to Grad-CAM)."""
    for key in CHOICES:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def first(key: str, value):
    """A widget's default, given only while the session holds no value for it: a value kept by
    keep_choices is set through the Session State API, and a default beside it makes Streamlit log a
    warning with a stack on every new upload."""
    return None if key in st.session_state else value


REVEAL_LABEL = "Show the model's output anyway (not reliable)"


def summary(a: Analysis, name: str, key: str = "") -> bool:
    """Quality gate, the image and the class probabilities with uncertainty. Returns whether the
    model's output may be shown: always when the gate passes; when it fails, only after the
    clinician turns on REVEAL_LABEL (per image, `key`). Until then no section may name the top class."""
    if a.gated:
        st.warning("**Image quality check failed — the probabilities below are not reliable.**\n\n"
                   + "\n".join(f"- {w}" for w in a.quality_warnings), icon=":material/report:")
    left, right = st.columns([1, 1.5], gap="large")
    with left:
        h, w = a.image.shape[:2]
        s = a.scale_to_original
        size = f"{w}×{h} px" if s == 1 else f"analysed at {w}×{h} px (uploaded ≈ {round(w * s)}×{round(h * s)})"
        st.image(a.image, caption=f"{name} · {size}", width="stretch")
    with right:
        if not a.gated:
            st.markdown(f"### Top class: {display_name(a.top_class)} — {percent(a.top_probability)}")
            _probabilities(a)
            return True
        st.markdown("### No reliable answer for this image")
        st.markdown("The image did not pass the quality checks above, so the model's output is hidden: its "
                    "probabilities, prediction set, similar cases' vote, the class its heatmaps explain and the "
                    "case report's answer. Show it only to study how the model behaves on such images.")
        st.markdown(GATE_MEANING)
        shown = st.toggle(REVEAL_LABEL, key=f"reveal_{key}", value=False)
        if shown:
            st.markdown(f"### Top class (not reliable): {display_name(a.top_class)} — {percent(a.top_probability)}")
            _probabilities(a)
        return shown


def _probabilities(a: Analysis) -> None:
    if a.melanoma_flag is not None:
        text = melanoma_flag_text(a.melanoma_flag, float(a.probabilities[a.classes.index("mel")]), a.melanoma_threshold)
        if a.melanoma_flag:
            st.markdown(":red-badge[:material/flag: Melanoma flag] " + text)
        else:
            st.caption(text)
    if a.low_confidence:
        st.markdown(":orange-badge[:material/help: Low confidence] " + "; ".join(a.uncertainty_reasons) + ".")
    st.plotly_chart(probability_figure(a.classes, a.probabilities), config={"displayModeBar": False},
                    key="prob_chart", theme=None)
    cols = st.columns(3 if a.tta_agreement is not None else 2)
    cols[0].metric("Malignant (sum)", percent(a.malignant_probability),
                   help="Sum of the probabilities of melanoma, basal cell carcinoma and actinic "
                        "keratosis / intraepithelial carcinoma. " + PRIOR_NOTE)
    cols[0].caption(PRIOR_NOTE)  # beside the sum it qualifies
    cols[1].metric("Uncertainty (entropy)", f"{a.entropy:.2f}",
                   help="Normalised entropy of the probabilities: 0 = all on one class, 1 = spread evenly.")
    if a.tta_agreement is not None:
        cols[2].metric("Flipped views agreeing", percent(a.tta_agreement, 0),
                       help=f"Share of the 4 flipped views with the same top class; the top-class "
                            f"probability varies by ±{percent(a.tta_spread)} (std) across them.")


def ground_truth(example: dict, split: str | None, split_known: bool, top_class: str | None) -> str:
    """Show a bundled example's recorded diagnosis after the analysis; returns it as one line.
    `top_class` None: the model's output is hidden, so the line does not compare with it."""
    dx = str(example.get("dx", "?")).lower()
    how = GT_SOURCES.get(str(example.get("dx_type")), str(example.get("dx_type") or "unknown method"))
    if not split_known:
        where = (f"HAM10000 '{example.get('split', '?')}' split according to examples.json (the loaded "
                 "model has no split.json to check)")
    elif split is None:
        where = "not among the images the loaded model was trained, tuned or tested on"
    elif split == "test":
        where = "held out from training (test split): the model never saw it"
    elif split == "val":
        where = "validation split: not trained on, but used for early stopping and calibration"
    else:
        where = "in the TRAINING split: the model has seen this image, so its answer says little"
    agree = ("The model's output is hidden (quality check failed)." if top_class is None else
             f"The model's top class {'matches' if dx == top_class else 'differs from'} it.")
    line = f"{display_name(dx)} ({dx}), confirmed by {how}; {where}. {agree}"
    st.info(f"**Ground truth:** {line}", icon=":material/assignment:")
    return line


def lesion_found(a: Analysis, min_pct: float) -> bool:
    """A usable lesion mask: present and covering at least `min_pct` % of the image."""
    return a.lesion_mask is not None and a.measurements is not None and a.measurements.area_pct >= min_pct


def cam_section(data: bytes, a: Analysis, layers: list[str], labels: dict[str, str], image_key: str,
                has_lesion: bool, heat_limits: dict[str, float], hidden: bool = False,
                failing: set | frozenset = frozenset()) -> dict:
    """Class, method, layer and opacity pickers; heatmaps beside the image; the share of heat on the
    lesion and on artefacts; the heat warning against each method's test-split 90th percentile
    (`heat_limits`, model.evaluation.heat_warning). `hidden`: the model's output is hidden, so no
    class is preselected (it would be the top class). `failing`: (method, layer) pairs that fail the
    randomisation check (model.explain.verdicts), labelled where they are offered."""
    c1, c2, c3, c4 = st.columns([1.2, 2.0, 0.8, 0.9])
    cls = c1.selectbox("Explain the score of", a.classes, index=None if hidden else a.top_index,
                       format_func=display_name, key=f"cam_class_{image_key}{'_hidden' if hidden else ''}",
                       placeholder="Choose a class")  # per image: the default follows its top class
    chosen = st.session_state.get("cam_layer", layers[-1])
    methods = c2.multiselect("Methods", list(labels), default=first("cam_methods", ["gradcam"]), key="cam_methods",
                             format_func=lambda m: labels[m] + (f" ({FAILS} at {chosen})" if (m, chosen) in failing else ""))
    layer = c3.selectbox("Layer", layers, index=first("cam_layer", len(layers) - 1) or 0, key="cam_layer",
                         help="Deeper layers are coarser but more class-specific.",
                         format_func=lambda l: l + (f" ({FAILS} for some methods)" if any(k[1] == l for k in failing) else ""))
    opacity = c4.slider("Heatmap opacity", 0.0, 1.0, first("opacity", 0.5), 0.05, key="opacity")
    if not methods or cls is None:
        st.info("Pick at least one method." if cls else "The model's output is hidden, so no class is chosen for "
                "you: choose the class whose score the heatmaps should explain.")
        return {"cams": {}, "attention": {}, "heat": {}, "cam_class": cls, "cam_layer": layer, "opacity": opacity}
    if (cls, layer, tuple(methods)) == (a.cam_class, a.cam_layer, tuple(a.cams)):
        cams = a.cams
    else:
        cams = analyse(data, cam_class=cls, cam_layer=layer, cam_methods=methods, segment=False).cams
    artefacts = a.artefacts.union if a.artefacts is not None else None
    heat = heat_shares(cams, a.lesion_mask if has_lesion else None, artefacts)
    attention = {m: None if h is None else h.lesion for m, h in heat.items()}
    st.caption(f"Red = regions that most raised the score of **{display_name(cls)}**, blue = little or none. "
               "A heatmap is not a segmentation and can point at artefacts.")
    tiles = [("Image", a.image, None)] + [(labels[m] + (f" — {FAILS} at {layer}" if (m, layer) in failing else ""),
                                           heatmap_overlay(a.image, cams[m], opacity), m) for m in cams]
    for row in range(0, len(tiles), 3):
        cols = st.columns(3)
        for col, (title, img, m) in zip(cols, tiles[row:row + 3]):
            col.image(img, caption=title + (heat_caption(heat.get(m), has_lesion) if m else ""), width="stretch")
    bad = [labels[m] for m in cams if (m, layer) in failing]
    if bad:
        st.warning(f"{', '.join(bad)} at `{layer}` {FAILS} (Model card): its map barely changes when the model's "
                   "weights are randomised, so it shows the image more than what the model learned.",
                   icon=":material/warning:")
    notes = _heat_notes(a, heat, heat_limits, labels, has_lesion, layer == layers[-1])
    return {"cams": cams, "attention": attention, "heat": heat, "cam_class": cls, "cam_layer": layer,
            "opacity": opacity, "warning": notes.get("warning"), "notes": notes}


def _heat_notes(a: Analysis, heat: dict, limits: dict[str, float], labels: dict[str, str], has_lesion: bool,
                default_layer: bool) -> dict[str, str]:
    """The outline-on-artefact note and the heat warning (its thresholds hold at the default layer);
    returns what was shown ({"touching", "warning", "unset"}) for the case report."""
    shown: dict[str, str] = {}
    touching = outline_warning(a.outline_touches) if has_lesion else None
    if touching:
        st.warning(touching, icon=":material/straighten:")
        shown["touching"] = touching
    if not has_lesion:
        return shown
    if not default_layer:
        st.caption("The heat warning is set at the last layer only; at this layer the shares are shown without it.")
        return shown
    warning = heat_warning(heat, limits, labels)
    if warning:
        st.warning(warning, icon=":material/visibility_off:")
        st.caption(HEAT_WARNING_MEANING)
        shown["warning"] = warning
    unset = heat_warning_unset(limits, list(heat), labels)
    if unset:
        st.caption(unset)
        shown["unset"] = unset
    return shown


def feature_maps_section(data: bytes, a: Analysis, layers: list[str], image_key: str) -> None:
    """Most active channels of a chosen layer, and one enlarged over the image."""
    c1, c2 = st.columns([1, 2])
    layer = c1.selectbox("Layer", layers, index=first("fmap_layer", len(layers) - 1) or 0, key="fmap_layer")
    fm = (a.feature_maps if a.feature_maps is not None and a.feature_maps.layer == layer
          else analyse(data, cam_methods=(), feature_layer=layer, segment=False).feature_maps)
    if fm is None or not len(fm.channels):
        st.info("This layer has no feature maps to show.")
        return
    means = dict(zip(fm.channels, fm.mean_activation))
    channel = c2.selectbox("Enlarge channel", fm.channels, key=f"fmap_pick_{image_key}_{layer}",
                           format_func=lambda ch: f"channel {ch} (mean activation {means[ch]:.2f})")
    pick = fm.channels.index(channel)
    tiles, captions = feature_tiles(fm.maps, fm.channels, fm.mean_activation)
    st.caption(f"Each map scaled on its own; {MAP_COLOURS}, the colours of the heatmaps above.")
    st.image(tiles, caption=captions, width=120)
    big1, big2, _ = st.columns(3)
    big1.image(colorize(fm.maps[pick], a.image.shape[:2]), width="stretch",
               caption=f"{layer}, channel {fm.channels[pick]}: {fm.maps[pick].shape[1]}×{fm.maps[pick].shape[0]} "
                       f"grid ({MAP_COLOURS})")
    big2.image(heatmap_overlay(a.image, fm.maps[pick], 0.5), width="stretch",
               caption=f"Same map over the image ({MAP_COLOURS})")


def lesion_section(a: Analysis, has_lesion: bool) -> None:
    """Outline or mask over the image, and the measurements with what they mean."""
    if a.lesion_mask is None:
        st.info("No segmentation model is loaded, so there is no outline and no measurements.")
        return
    if not has_lesion:
        found = f" (only {a.measurements.area_pct:.2f}% of the image)" if a.measurements else ""
        st.warning(f"The segmentation model found no clear lesion{found}, so there are no measurements. "
                   "What it found, if anything, is outlined below.", icon=":material/search_off:")
    left, right = st.columns([1, 1.25], gap="large")
    with left:
        view = st.radio("Show", ["Outline", "Mask", "Image only"], horizontal=True, key="mask_view")
        img = {"Outline": outline_image, "Mask": mask_image}.get(view, lambda i, m: i)(a.image, a.lesion_mask)
        st.image(img, width="stretch", caption="Lesion found by the segmentation model")
    with right:
        if not has_lesion:
            return
        st.table(measurement_rows(a.measurements), border="horizontal")
        st.caption("Pixel values refer to the uploaded image; without a scale they cannot be converted to mm. "
                   "Asymmetry, border and colour follow the ABCD idea but are not validated scores.")


def details(a: Analysis, load_seconds: float, device: str) -> None:
    if a.notes:
        for n in a.notes:
            st.info(n, icon=":material/info:")
    with st.expander("Timings per stage"):
        rows = [{"stage": k.replace("_", " "), "ms": v} for k, v in a.timings_ms.items()]
        rows.append({"stage": "total analysis", "ms": round(sum(a.timings_ms.values()), 1)})
        st.table(rows, border="horizontal")
        st.caption(f"Device: {device}. Model loaded once per server in {load_seconds:.1f} s. Results are cached: "
                   "changing only display settings does not run the network again.")
    if getattr(a, "runtime", None):
        st.caption(runtime_line(a.runtime))
