"""Model card section for the conformal prediction sets and the similar-cases reference set, read
from meta.json (`conformal`, `similar`: measured by model.aids.references / model.aids.conformal /
model.aids.similar on the test split). Nothing typed in here."""
from __future__ import annotations

import streamlit as st

from app.meta import dig, num, pct
from model.aids.conformal import DEFAULT_COVERAGE, raised_levels
from model.labels import display_name


def conformal_card(meta: dict) -> None:
    cfg = meta.get("conformal")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("thresholds"), dict):
        st.info("No conformal calibration (`python -m model.cli.references BUNDLE --data DIR` adds it).")
        return
    n = cfg.get("n_per_class", {})
    st.markdown(f"**Prediction sets:** {cfg.get('method', '?')} with {str(cfg.get('score', '?')).upper()} scores, "
                f"calibrated on {sum(v for v in n.values() if isinstance(v, int))} validation images "
                f"({', '.join(f'{c} {v}' for c, v in n.items())}). Each class gets its own threshold, so each class "
                "is covered at the stated rate on its own, not only on average."
                + (" The top class always joins the set, so a set is never empty and never leaves out the most "
                   "probable diagnosis (which keeps the coverage guarantee)." if cfg.get("always_top") else "")
                + "".join(f" {display_name(c)} is calibrated {cfg['stricter'][c]} points stricter than the stated "
                          f"coverage (at {DEFAULT_COVERAGE}%, its threshold is its {level}% one), since missing it "
                          "costs most." for c, level in raised_levels(DEFAULT_COVERAGE, cfg.get("stricter")).items()))
    never = [c for c, v in (cfg["thresholds"].get("99") or {}).items() if v is None]
    if never:
        st.caption(f"At 99% the validation split has too few images of {', '.join(never)} for a finite threshold: "
                   "those classes are then always in the set.")
    test = cfg.get("test")
    if not isinstance(test, dict) or not test:
        st.caption("Not measured on the test split.")
        return
    rows = [{"target coverage": f"{c}%", "coverage (test)": pct(r.get("coverage")),
             "mean set size": num(r.get("mean_set_size"), 2), "single-class sets": pct(r.get("singleton_share")),
             "empty sets": pct(r.get("empty_share")), "images": r.get("n", "?")}
            for c, r in sorted(test.items(), key=lambda kv: int(kv[0])) if isinstance(r, dict)]
    st.table(rows, border="horizontal")
    at90 = test.get("90") or next(iter(test.values()))
    st.caption(f"Per class at {int(round(100 * at90.get('coverage_target', 0.9)))}% (test split):")
    st.table([{"class": display_name(c), "coverage": pct(v.get("coverage")),
              "mean set size": num(v.get("mean_set_size"), 2), "images": v.get("n")}
             for c, v in at90.get("per_class", {}).items()], border="horizontal")


def similar_card(meta: dict) -> None:
    info = meta.get("similar")
    if not isinstance(info, dict):
        st.info("No reference set of similar cases (`python -m model.cli.references BUNDLE --data DIR` builds it).")
        return
    st.markdown(f"**Similar cases:** {info.get('n', '?')} images of the training split (never validation or test), "
                f"searched by cosine similarity of the classifier's pre-logit features "
                f"({info.get('dims', '?')} PCA dimensions, {pct(info.get('pca_variance_kept'))} of their variance; "
                f"{num((info.get('bytes') or 0) / 2**20, 1)} MB with thumbnails).")
    t = info.get("test")
    if not isinstance(t, dict):
        st.caption("Not measured on the test split.")
        return
    k = t.get("k", "?")
    cols = st.columns(4)
    cols[0].metric(f"kNN vote balanced accuracy (k={k})", pct(t.get("knn_balanced_accuracy")))
    cols[1].metric("Softmax balanced accuracy", pct(t.get("softmax_balanced_accuracy")))
    cols[2].metric("kNN vote macro AUC", num(t.get("knn_macro_auc")),
                   help="From the similarity-weighted vote shares of the k neighbours.")
    cols[3].metric("Softmax macro AUC", num(t.get("softmax_macro_auc")))
    st.caption(f"{t.get('n', '?')} test images; the vote agrees with the softmax's top class on "
               f"{pct(t.get('agreement'))} of them. Precision at {k}: the share of a test image's {k} neighbours "
               "with its own diagnosis, per class.")
    st.table([{"class": display_name(c), f"precision at {k}": pct(v)}
              for c, v in (t.get("precision_at_k") or {}).items()], border="horizontal")


def aids_card(meta: dict) -> None:
    conformal_card(meta)
    similar_card(meta)
    if dig(meta, "similar", "test") is None and dig(meta, "conformal", "test") is None:
        return
    st.caption("Measured by `python -m model.cli.references` (or at the end of `train.py classify`).")
