"""The model card's 7-point checklist section: the concept probes' AUROC per criterion, TCAV for
melanoma with its significance test, and the checklist's score against the classifier on Derm7pt
`report` images; all read from meta.json `interpretability.concepts` (written by
`python -m model.cli.concepts`)."""
from __future__ import annotations

import streamlit as st

from app.meta import num, pct
from model.data.checklist import BY_NAME, RELIABLE_AUROC

RATES = (("probe_score", "7-point score from the probes (≥ 3)"),
         ("dermatologist_score", "7-point score from the dermatologists' criteria (≥ 3)"),
         ("classifier_top_class", "Classifier: melanoma is the top class"),
         ("classifier_melanoma_flag", "Classifier: melanoma flag"))


def label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def criteria_rows(rec: dict) -> list[dict]:
    rows = []
    for name, c in (rec.get("criteria") or {}).items():
        ci = c.get("auroc_ci") or [None, None]
        carries = isinstance(c.get("auroc"), (int, float)) and c["auroc"] >= RELIABLE_AUROC
        rows.append({"criterion": label(name), "points": c.get("weight", BY_NAME[name].weight if name in BY_NAME else "?"),
                     "AUROC (report)": num(c.get("auroc")), "95% CI": f"{num(ci[0])}–{num(ci[1])}",
                     "images": c.get("n_test"), "with the criterion": c.get("positives"),
                     "carried by the features": "yes" if carries else f"no (under {RELIABLE_AUROC:.2f}: shown greyed)"})
    return rows


def not_carried(rec: dict) -> list[str]:
    return [label(n) for n, c in (rec.get("criteria") or {}).items()
            if not (isinstance(c.get("auroc"), (int, float)) and c["auroc"] >= RELIABLE_AUROC)]


def tcav_rows(rec: dict) -> list[dict]:
    t = (rec.get("tcav") or {}).get("criteria") or {}
    return [{"criterion": label(n), "TCAV score": f"{num(r.get('tcav'), 2)} ± {num(r.get('tcav_sd'), 2)}",
             "random concepts": f"{num(r.get('random_tcav'), 2)} ± {num(r.get('random_sd'), 2)}",
             "p": f"{r.get('p', float('nan')):.2g}", "p (Bonferroni)": f"{r.get('p_bonferroni', float('nan')):.2g}",
             "significant": "yes" if r.get("significant") else "no"} for n, r in t.items()]


def rate_rows(rec: dict) -> list[dict]:
    cmp_ = rec.get("checklist_vs_classifier") or {}
    return [{"rule": text, "sensitivity": pct(cmp_[k].get("sensitivity")), "specificity": pct(cmp_[k].get("specificity"))}
            for k, text in RATES if isinstance(cmp_.get(k), dict)]


def checklist_card(meta: dict) -> None:
    rec = (meta.get("interpretability") or {}).get("concepts")
    if not isinstance(rec, dict) or not rec.get("criteria"):
        st.info("No 7-point concept probes for this classifier "
                "(`python -m model.cli.concepts BUNDLE --data ../shared/data/derm7pt` fits and measures them).")
        return
    missing = not_carried(rec)
    st.caption(f"One class-balanced logistic-regression probe per criterion on the classifier's pooled features, "
               f"fitted on Derm7pt's select images ({rec.get('n_select', '?')}); every figure below is from its report "
               f"images ({rec.get('n', '?')}), which nothing was fitted or chosen on. AUROC with a bootstrap 95% CI "
               f"({rec.get('bootstrap', '?')} resamples). Command: `{rec.get('command', 'python -m model.cli.concepts')}`.")
    st.markdown("**Criteria the features do not carry (AUROC under 0.70):** " + ", ".join(missing) if missing
                else f"All {len(rec['criteria'])} criteria reach AUROC {RELIABLE_AUROC:.2f} on report images "
                     "(see the confidence intervals: a lower bound under 0.70 is not yet sure).")
    st.table(criteria_rows(rec), border="horizontal")
    t = rec.get("tcav") or {}
    st.markdown(f"**How much the melanoma output leans on each criterion (TCAV).** Share of the "
                f"{t.get('n_images', '?')} report melanomas whose melanoma logit rises when the `{t.get('layer', '?')}` "
                f"activations move along the criterion's direction; {t.get('runs', '?')} concept directions per "
                f"criterion against {t.get('random_concepts', '?')} random ones ({t.get('test', '?')}, "
                f"α = {t.get('alpha', 0.05)}). Significant means the criterion's direction differs from a random one. "
                "Every criterion is far commoner in melanomas, so each direction shares a part with melanoma itself: "
                "a score near 1 says the output rises along the criterion, not that the criterion alone drives it.")
    st.table(tcav_rows(rec), border="horizontal")
    cmp_ = rec.get("checklist_vs_classifier") or {}
    st.markdown(f"**The checklist against the classifier** on {cmp_.get('n', '?')} report images "
                f"({cmp_.get('melanomas', '?')} melanomas): melanoma sensitivity and specificity.")
    st.table(rate_rows(rec), border="horizontal")
    agree = cmp_.get("agreement") or {}
    st.markdown(f"Agreement of the probes' score with the dermatologists' on the same images: "
                f"{pct(agree.get('suggests_melanoma_agreement'))} agree on ≥ 3 (Cohen's κ "
                f"{num(agree.get('suggests_melanoma_kappa'), 2)}), Spearman ρ of the scores "
                f"{num(agree.get('score_spearman'), 2)}, mean absolute difference "
                f"{num(agree.get('score_mean_abs_difference'), 2)} points.")
