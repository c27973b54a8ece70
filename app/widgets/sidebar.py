"""Sidebar: a short summary of the loaded bundles (from meta.json) and the disclaimer."""
from __future__ import annotations

import streamlit as st

from app.meta import dig
from app.resources import bundle_metas, device_label, models_dir
from model.aids.conformal import COVERAGES, DEFAULT_COVERAGE

COVERAGE_KEY = "coverage"
DISCLAIMER = ("**Research and teaching tool — not a medical device.** Outputs are not a diagnosis "
              "and must not guide patient care.")


def render_sidebar() -> None:
    with st.sidebar:
        st.warning(DISCLAIMER, icon=":material/warning:")
        cls, seg, error = bundle_metas()
        st.markdown("#### Model")
        if error:
            st.error(error)
        if cls is None:
            st.caption(f"No classifier bundle in `{models_dir()}`: see the Analyse page for how to train one.")
            return
        st.markdown(f"Classifier: `{cls.get('arch', '?')}` · input {_size(cls)}")
        st.caption("Classes: " + ", ".join(map(str, cls.get("classes", []))))
        bacc = dig(cls, "metrics", "test", "balanced_accuracy")
        n = dig(cls, "metrics", "test", "n")
        if isinstance(bacc, (int, float)):
            st.markdown(f"Test balanced accuracy: **{bacc:.1%}**" + (f" (n = {n})" if n else ""))
        else:
            st.caption("No test metrics recorded in meta.json.")
        if seg is not None:
            dice = dig(seg, "metrics", "test", "mean_dice")
            st.markdown(f"Segmenter: `{seg.get('arch', '?')}`"
                        + (f" · test Dice **{dice:.2f}**" if isinstance(dice, (int, float)) else ""))
        else:
            st.caption("No segmenter bundle: no lesion outline or measurements.")
        device = device_label()
        if device:
            st.caption(f"Runs on {device}")
        st.slider("Prediction-set coverage (%)", COVERAGES[0], COVERAGES[-1], DEFAULT_COVERAGE, 1, key=COVERAGE_KEY,
                  help="The conformal prediction set contains the true diagnosis with this probability "
                       "(on images like the validation split), for every class on its own.")
        created = str(cls.get("created", ""))[:10]
        if created:
            st.caption(f"Trained {created} · split {dig(cls, 'split', 'hash', default='?')}")


def _size(meta: dict) -> str:
    size = meta.get("input_size")
    return f"{size[1]}×{size[0]} px" if isinstance(size, list) and len(size) == 2 else "?"
