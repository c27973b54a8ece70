"""The model card's checks on the explanations, read from meta.json (written by
`python -m model.cli.explanation_checks`): the randomisation sanity check (`interpretability.sanity`),
ROAD beside its baselines (`interpretability.faithfulness.baselines` / `.versus_baselines`) and the
what-if stress test (`interpretability.stress_test`)."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app.card.faithfulness import LABELS, layer_order
from app.meta import pct
from model.explain.confounders import NAMES as WHAT_IF_NAMES
from model.explain.verdicts import BASELINE_NAMES, FAILS, baseline_verdicts, randomisation_failures
from model.labels import CAM_METHOD_NAMES

COMMAND = "python -m model.cli.explanation_checks"


def _layer_key(name: str) -> tuple:
    return layer_order(name)


def sanity_figure(sanity: dict) -> go.Figure:
    """Median rank correlation (trained vs randomised map) per depth: one panel per layer, a line per method."""
    methods = [m for m in CAM_METHOD_NAMES if isinstance(sanity.get(m), dict)]
    layers = sorted({l for m in methods for l in sanity[m]}, key=_layer_key)
    depths = sanity.get("depths") or []
    fig = make_subplots(rows=1, cols=max(len(layers), 1), shared_yaxes=True, subplot_titles=layers)
    for j, layer in enumerate(layers, 1):
        for i, m in enumerate(methods):
            med = sanity[m].get(layer)
            if med is None:
                continue
            fig.add_trace(go.Scatter(x=[f"+{d}" for d in depths[:len(med)]], y=med, mode="lines+markers",
                                     name=CAM_METHOD_NAMES[m], legendgroup=m, showlegend=j == 1,
                                     line=dict(color=f"hsl({i * 60},60%,45%)")), row=1, col=j)
        fig.add_hline(y=sanity.get("fail_correlation", 0.5), line_dash="dot", line_color="grey", row=1, col=j)
    fig.update_yaxes(range=[-0.2, 1.02], title_text="Spearman ρ (median)", row=1, col=1)
    fig.update_xaxes(tickangle=60, tickfont=dict(size=9))
    fig.update_layout(template="plotly_white", height=380, margin=dict(l=10, r=10, t=50, b=80),
                      title="Randomisation check: trained vs randomised map (lower = the map depends on the weights)")
    return fig


def sanity_section(meta: dict) -> None:
    sanity = (meta.get("interpretability") or {}).get("sanity")
    if not isinstance(sanity, dict) or not sanity.get("depths"):
        st.info(f"Randomisation check not run for this classifier (`{COMMAND} BUNDLE --data DIR --checks sanity`).")
        return
    depth = sanity.get("fail_depth", 3)
    names = sanity["depths"]
    st.caption(
        "Adebayo et al. (NeurIPS 2018): the classifier's weights are randomised from the output back, one group "
        f"at a time ({', '.join(names)}), and each method's map of the trained model's top class is compared "
        "with the randomised model's by Spearman's rank correlation at the layer's grid; the curve is the "
        f"median over {sanity.get('n', '?')} {sanity.get('split', 'test')} images (seed {sanity.get('seed', '?')}). "
        "A map that stays the same when the weights are gone shows the image, not the model. A method/layer whose "
        f"median stays above {sanity.get('fail_correlation', 0.5)} once {' + '.join(names[:depth])} are randomised "
        f"**{FAILS}**. Command: `{sanity.get('command', COMMAND)}`.")
    st.plotly_chart(sanity_figure(sanity), key="card_sanity", theme=None)
    failing = sorted(randomisation_failures(meta.get("interpretability")))
    if failing:
        st.warning(f"These heatmaps {FAILS}: " + ", ".join(f"{CAM_METHOD_NAMES.get(m, m)} at `{l}`"
                                                          for m, l in failing)
                   + ". The Analyse page labels them.", icon=":material/warning:")
    else:
        st.success("Every method at every layer passes the randomisation check.", icon=":material/check:")


def baselines_block(meta: dict, labels: dict[str, str] = LABELS) -> None:
    """ROAD of the baselines, and each method's paired interval against each, with the verdict."""
    interp = meta.get("interpretability") or {}
    fig = interp.get("faithfulness") or {}
    base, versus = fig.get("baselines") or {}, fig.get("versus_baselines") or {}
    if not base:
        st.info(f"No baselines beside these ROAD figures yet (`{COMMAND} BUNDLE --data DIR --checks baselines`): "
                "until they are measured, a heatmap cannot be told from “the middle of the picture”.")
        return
    size, n_base = fig.get("split_size"), max(v.get("n", 0) for v in base.values())
    if isinstance(size, int) and n_base < size:
        st.warning(f"The baselines cover {n_base} of the {size} {fig.get('split', 'test')} images so far (a seeded "
                   "random subset; the run is resumable): the intervals below are over those images only.",
                   icon=":material/hourglass_top:")
    st.markdown("**Beside maps that know nothing of the model.** " + "; ".join(
        f"{BASELINE_NAMES.get(k, k)}: ROAD {v['road']:+.3f} (n = {v['n']})" for k, v in base.items()) + ".")
    verdicts = baseline_verdicts(interp)
    rows = []
    by = {(r["method"], r["layer"], r["baseline"]): r for r in versus.get("rows", [])}
    for (m, l), v in sorted(verdicts.items(), key=lambda kv: (_layer_key(kv[0][1]), kv[0][0])):
        row = {"method": labels.get(m, m), "layer": l}
        for b in base:
            r = by.get((m, l, b))
            row[f"− {b}"] = f"{r['difference']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r else "–"
        row["verdict"] = v["text"]
        rows.append(row)
    st.table(rows, border="horizontal")
    wins = [f"{labels.get(m, m)} at `{l}`" for (m, l), v in verdicts.items() if v["losing_to"]]
    beat = [f"{labels.get(m, m)} at `{l}`" for (m, l), v in verdicts.items() if v["beats"]]
    st.markdown(("**More faithful than the baselines:** " + ", ".join(beat) + ". ") if beat else
                "**No method is more faithful than every baseline.** ")
    if wins:
        st.markdown("**A baseline wins** (its ROAD is higher, interval wholly below 0) for " + ", ".join(wins) + ".")
    n = sorted({r["n"] for r in versus.get("rows", [])})
    n_text = "?" if not n else str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
    st.caption(f"Each cell: mean ROAD of the method minus the baseline's on the same images (n = {n_text}), same percentiles, "
               f"imputation and class, with a {versus.get('interval', 'bootstrap 95% interval')}. A method is called "
               "more faithful than the baselines only where every interval lies above 0. "
               f"Command: `{versus.get('command', COMMAND)}`.")


def stress_section(meta: dict) -> None:
    stress = (meta.get("interpretability") or {}).get("stress_test")
    if not isinstance(stress, dict) or not any(isinstance(v, dict) for v in stress.values()):
        st.info(f"Stress test not run for this classifier (`{COMMAND} BUNDLE --data DIR --checks stress`).")
        return
    rows = [{"what-if": WHAT_IF_NAMES.get(k, k), "top class flips": pct(v.get("flip_rate")),
             "Δ P(melanoma)": f"{v['delta_mel']:+.3f} [{v['delta_mel_ci'][0]:+.3f}, {v['delta_mel_ci'][1]:+.3f}]"
             if v.get("delta_mel") is not None else "–",
             "Δ balanced accuracy": f"{v['delta_bacc']:+.3f}" if v.get("delta_bacc") is not None else "–",
             "images": v.get("n")} for k, v in stress.items() if isinstance(v, dict)]
    st.table(rows, border="horizontal")
    st.caption(f"Each what-if is drawn (seeded, the same every run) on every {stress.get('split', 'test')} image "
               f"(split of {stress.get('split_size', '?')}); flips: share whose top class changes; Δ P(melanoma): "
               "mean change of the calibrated melanoma probability, with a bootstrap 95% interval; Δ balanced "
               "accuracy: after minus before. Lesion only / surroundings only use the U-Net's mask (images where it "
               f"found no lesion are left out). Command: `{stress.get('command', COMMAND)}`.")
