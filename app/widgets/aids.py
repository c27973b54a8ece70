"""The Analyse page's prediction set and similar confirmed cases (no torch): pure helpers that turn
an Analysis into text, and one Streamlit section that renders them."""
from __future__ import annotations


import streamlit as st

from app.widgets.components import percent
from model.aids.conformal import coverage_phrase, raised_levels, set_notes
from model.labels import GT_SOURCES, display_name, is_malignant
from model.inference.results import Analysis


def set_at(a: Analysis, coverage: int) -> list[str] | None:
    """The conformal set at `coverage` percent (class codes, most probable first); None if uncalibrated."""
    return a.prediction_sets.get(int(coverage)) if a.prediction_sets else None


def neighbour_caption(n) -> str:
    """Diagnosis, how it was confirmed, age/sex/site where known, similarity (one line each)."""
    how = GT_SOURCES.get(n.dx_type, n.dx_type) if n.dx_type else "confirmation not recorded"
    who = ", ".join(x for x in (f"{n.age} y" if n.age else "", n.sex, n.site) if x)
    return "  \n".join(x for x in (f"**{display_name(n.diagnosis)}**", f"by {how}", who,
                                   f"similarity {n.similarity:.2f}") if x)


def vote_note(a: Analysis) -> tuple[str, bool]:
    """One line comparing the kNN vote with the softmax, and whether they disagree."""
    s = a.similar
    k = len(s.neighbours)
    vote = f"{display_name(s.vote_class)} ({percent(s.vote[s.vote_class], 0)} of the similarity-weighted vote)"
    line = f"kNN vote of the {k} most similar training cases: **{vote}** · softmax: **{display_name(a.top_class)}**"
    return line, s.vote_class != a.top_class


def _set_block(a: Analysis, coverage: int) -> None:
    codes = set_at(a, coverage)
    if codes is None:
        st.info("This classifier has no conformal calibration. Add it with `python -m model.cli.conformal BUNDLE "
                "--data DIR` (or `python -m model.cli.references BUNDLE --data DIR` for both aids).")
        return
    badges = " ".join(f":{'red' if is_malignant(c) else 'blue'}-badge[{display_name(c)}]" for c in codes)
    st.markdown(f"**Prediction set at {coverage}%:** {badges or '(empty)'}")
    stricter = (" The class in brackets is calibrated stricter, since missing it costs most."
                if raised_levels(coverage, a.set_stricter) else "")
    st.caption(f"On images like the validation split, the true diagnosis is in this set "
               f"{coverage_phrase(coverage, a.set_stricter)}.{stricter} Class-conditional split conformal "
               "prediction; the sidebar sets the coverage. A guarantee on average over such images, not for this "
               "one image.")
    for note in set_notes(codes, a.top_class, coverage):
        if "ruled out" in note:
            st.warning(note, icon=":material/priority_high:")
        elif note.startswith(("Uncertain", "No diagnosis")):
            st.info(note, icon=":material/help:")
        else:
            st.caption(note)


@st.dialog("Similar case", width="large")
def _enlarge(n) -> None:
    st.image(n.thumbnail, width=512)
    st.markdown(neighbour_caption(n))
    st.caption(f"{n.image_id} · HAM10000 (CC BY-NC-SA 4.0), training split of this classifier; thumbnail only.")


def _similar_block(a: Analysis, image_key: str) -> None:
    if a.similar is None:
        st.error(a.similar_error or "No similar cases available.", icon=":material/image_search:")
        return
    if a.similar.in_reference:
        st.warning(a.similar.in_reference, icon=":material/content_copy:")
    line, disagree = vote_note(a)
    st.markdown(line)
    if disagree:
        st.caption(":orange-badge[:material/call_split: Disagree] The closest confirmed cases point elsewhere than "
                   "the classifier's softmax: look at both, and at the cases below.")
    cols = st.columns(len(a.similar.neighbours))
    for i, (col, n) in enumerate(zip(cols, a.similar.neighbours)):
        with col:
            if n.thumbnail:
                st.image(n.thumbnail, width="stretch")
            st.markdown(neighbour_caption(n))
            if n.thumbnail and st.button("Enlarge", key=f"enlarge_{image_key}_{i}", icon=":material/zoom_in:"):
                _enlarge(n)
    st.caption("Most similar images of the classifier's training split by the cosine similarity of its "
               "pre-logit features (HAM10000, CC BY-NC-SA 4.0). Similar to the model is not always similar to "
               "a dermatologist.")


HIDDEN_AIDS = ("The prediction set and the similar cases are hidden with the model's output: the set and the "
               "cases' vote would name its answer.")


def aids_section(a: Analysis, coverage: int, image_key: str, show_set: bool = True,
                 show_similar: bool = True, hidden: bool = False) -> None:
    """Prediction set (with its plain-language notes) and the k most similar confirmed cases (a review
    study may show only one of them). `hidden`: the model's output is hidden (failed quality gate)."""
    if hidden:
        if a.similar is not None and a.similar.in_reference:
            st.warning(a.similar.in_reference, icon=":material/content_copy:")
        st.info(HIDDEN_AIDS, icon=":material/visibility_off:")
        return
    if a.gated:
        st.caption("The image failed the quality checks above: the set and the similar cases are not reliable.")
    if show_set:
        _set_block(a, coverage)
    if show_similar:
        st.subheader("Similar confirmed cases")
        _similar_block(a, image_key)
