"""Faithfulness (ROAD) of the heatmaps shown, beside their heat-in-lesion share. Computed after the
rest of the page has been drawn (or on request), cached per image, class, layer and method; never
part of the analysis itself. Torch stays behind app.resources' loaded model."""
from __future__ import annotations

import streamlit as st

from app.widgets.components import percent
from app.resources import get_loaded, model_key, sha256
from model.explain.verdicts import baseline_verdicts

EXPLAIN = ("ROAD (Rong et al. 2022, pytorch-grad-cam). Δp is the change in the explained class's probability, "
           "after minus before, averaged over 10-90% of the pixels removed: negative when it drops, positive when "
           "it rises. MoRF Δp removes the pixels the heatmap ranks most relevant, LeRF Δp the least relevant. "
           "Removing pixels often moves the probability both ways, so neither sign alone says much; what counts is "
           "the gap: ROAD = (LeRF Δp − MoRF Δp) / 2, positive when removing the heatmap's pixels costs more than "
           "removing the others, so higher means the heatmap points at what the model used; near 0 or negative "
           "means it does not.")


@st.cache_data(max_entries=64, ttl=6 * 3600, show_spinner=False)
def _road(digest: str, key: str, methods: tuple[str, ...], cam_class: str | None, cam_layer: str | None,
          _data: bytes) -> dict:
    """ROAD of several methods at once: one CAM pass, the imputations solved together, one batch."""
    from model.explain.road import faithfulness
    from model.data.preprocess import decode_image

    bundle = get_loaded().analyzer.classifier
    return faithfulness(bundle, decode_image(_data, max_side=1024), methods, cam_class, cam_layer)


@st.cache_resource(show_spinner=False)
def _seen() -> dict:
    """(image, model, class, layer, method) -> scores already measured, shared by sessions (bounded)."""
    return {}


def road_scores(data: bytes, cam: dict) -> dict[str, dict]:
    """method -> ROAD scores for the heatmaps of `cam` (the dict app.analyse.sections.cam_section returns).
    Methods measured before for this image, class and layer are reused; the rest are measured together."""
    digest, key = sha256(data), model_key()
    seen = _seen()
    where = (digest, key, cam["cam_class"], cam["cam_layer"])
    missing = tuple(m for m in cam["cams"] if where + (m,) not in seen)
    if missing:
        if len(seen) > 4096:
            seen.clear()
        for m, s in _road(digest, key, missing, cam["cam_class"], cam["cam_layer"], data).items():
            seen[where + (m,)] = s
    return {m: seen[where + (m,)] for m in cam["cams"]}


def panel(slot, data: bytes, cam: dict, labels: dict[str, str], key: str = "faith") -> dict[str, dict]:
    """Fill `slot` (a container placed under the heatmaps) with a table: method, heat on the lesion,
    ROAD, MoRF, LeRF. Returns the scores ({} when switched off).

    Off until the clinician asks: ROAD perturbs the image 10 times per heatmap and costs about a
    second per heatmap on 2 cores, far more than the analysis, so measuring it on every switch of
    method or layer made each switch wait for it (docs/page-latency.md). Once on, it stays on for
    the session, and scores already measured are reused."""
    with slot:
        on = st.toggle("Measure faithfulness of each heatmap (ROAD, about a second per heatmap)", value=False,
                       key=f"{key}_on", help=EXPLAIN)
        if not on or not cam["cams"]:
            return {}
        with st.spinner(f"Measuring the faithfulness of {len(cam['cams'])} heatmap(s)…"):
            scores = road_scores(data, cam)
        verdicts = baseline_verdicts(get_loaded().analyzer.classifier.meta.get("interpretability"))
        rows = [{"heatmap": labels.get(m, m),
                 "heat on lesion": percent(cam["attention"].get(m), 0) if cam["attention"].get(m) is not None else "–",
                 "ROAD (higher = more faithful)": f"{s['road']:+.3f}", "MoRF Δp": f"{s['morf']:+.3f}",
                 "LeRF Δp": f"{s['lerf']:+.3f}",
                 "against the baselines (test split)": verdict_cell(verdicts, m, cam["cam_layer"])}
                for m, s in scores.items()]
        st.table(rows, border="horizontal")
        st.caption(EXPLAIN + " The last column: over the test split (Model card), this method at this layer "
                   "against maps that know nothing of the model (a centred blob, the blurred lesion mask, a random "
                   "map), from paired 95% intervals; one image's ROAD says little on its own.")
        return scores


def verdict_cell(verdicts: dict, method: str, layer: str) -> str:
    v = verdicts.get((method, layer))
    return v["text"] if v else "not measured at this layer"


def after_paint(slot, data: bytes, cam: dict, labels: dict[str, str], key: str = "faith") -> dict[str, dict]:
    """`panel`, but a failure becomes a note in the server log: the page around it stays usable."""
    import logging

    try:
        return panel(slot, data, cam, labels, key)
    except Exception:  # noqa: BLE001 - an extra measure must never break the page
        logging.getLogger(__name__).exception("faithfulness failed")
        with slot:
            st.caption("Faithfulness could not be measured for these heatmaps (details in the server log).")
        return {}
