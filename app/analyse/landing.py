"""What the Analyse page shows before an image is chosen: how the loaded classifier did on its own
held-out test split, per class, as measured by train.py / model.cli.evaluate (meta.json), so a
clinician knows which answers deserve less trust before uploading. The chart also means the browser
has loaded its chart and metric code while the clinician picks a file, instead of after the upload
(docs/page-latency.md)."""
from __future__ import annotations

import streamlit as st

from app.meta import dig, num, pct
from app.widgets.components import recall_figure


def at_a_glance(meta: dict | None) -> None:
    """Balanced accuracy, macro AUC and the melanoma flag's rates on the test split, and each class's
    sensitivity with its number of test images; nothing when the bundle recorded no test figures."""
    test = dig(meta or {}, "metrics", "test", default=None)
    per_class = test.get("per_class") if isinstance(test, dict) else None
    if not isinstance(per_class, dict) or not per_class:
        return
    st.subheader("The loaded model on its own test split", divider="gray")
    cols = st.columns(4)
    cols[0].metric("Balanced accuracy", pct(test.get("balanced_accuracy")),
                   help="Mean over the classes of the share of each class's test images answered right.")
    cols[1].metric("Macro AUC", num(test.get("macro_auc")), help="One-vs-rest ROC AUC averaged over the classes.")
    cols[2].metric("Melanoma flag sensitivity", pct(test.get("melanoma_flag_sensitivity")),
                   help="Share of the test melanomas the melanoma flag raised.")
    cols[3].metric("Melanoma flag specificity", pct(test.get("melanoma_flag_specificity")),
                   help="Share of the other test lesions the flag left alone.")
    recall = {c: v.get("recall") for c, v in per_class.items() if isinstance(v, dict)}
    support = {c: v.get("support") for c, v in per_class.items() if isinstance(v, dict)}
    st.plotly_chart(recall_figure(recall, support), config={"displayModeBar": False}, key="landing_recall",
                    theme=None)
    st.caption(f"{test.get('n', '?')} test images (HAM10000, lesion-disjoint from training). Images from another "
               "clinic or dermatoscope do worse: the Model card gives those figures, and how they were measured.")
