"""The model card's faithfulness section: ROAD and heat-in-lesion share per CAM method and layer,
read from meta.json `interpretability.faithfulness` (written by `python -m model.cli.faithfulness`)."""
from __future__ import annotations

import re

import plotly.graph_objects as go
import streamlit as st

from app.analyse.faithfulness import EXPLAIN
from model.explain.verdicts import FAILS, baseline_verdicts, randomisation_failures
from model.labels import CAM_METHOD_NAMES

LABELS = CAM_METHOD_NAMES  # display only; unknown ids are shown as they are


def layer_order(name: str) -> tuple:
    """Sort key that puts stages shallow to deep: blocks.2 before blocks.10, whatever the rows' order."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def road_figure(rows: list[dict]) -> go.Figure:
    """ROAD by method (rows) and layer (columns, shallow to deep), as a heatmap with the values written in."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    layers = sorted(dict.fromkeys(r["layer"] for r in rows), key=layer_order)
    value = {(r["method"], r["layer"]): r["road"] for r in rows}
    z = [[value.get((m, l)) for l in layers] for m in methods]
    fig = go.Figure(go.Heatmap(z=z, x=layers, y=[LABELS.get(m, m) for m in methods], colorscale="RdBu",
                               zmid=0, text=[[f"{v:+.3f}" if v is not None else "" for v in row] for row in z],
                               texttemplate="%{text}", colorbar=dict(title="ROAD")))
    fig.update_layout(template="plotly_white", height=120 + 40 * len(methods), margin=dict(l=10, r=10, t=40, b=40),
                      title="ROAD faithfulness (higher = the heatmap shows what the model used)",
                      xaxis=dict(title="layer (shallow → deep)"), yaxis=dict(autorange="reversed"))
    return fig


def faithfulness_section(meta: dict) -> None:
    fig = (meta.get("interpretability") or {}).get("faithfulness")
    if not isinstance(fig, dict) or not fig.get("rows"):
        st.info("Faithfulness not measured for this classifier (`python -m model.cli.faithfulness BUNDLE --data DIR`).")
        return
    rows = fig["rows"]
    best = max(rows, key=lambda r: r["road"])
    subset = fig.get("subset")
    commands = fig.get("commands") or [fig.get("command", "python -m model.cli.faithfulness")]
    st.caption(f"{EXPLAIN} Measured on the {fig.get('split', '?')} split"
               + (f" — {subset}; ± one standard error shown" if subset
                  else f" ({fig.get('n_images', '?')} images; ± one standard error shown)")
               + "; top class, calibrated probability. "
               + ("Command: " if len(commands) == 1 else "Commands: ") + ", ".join(f"`{c}`" for c in commands) + ".")
    verdicts = baseline_verdicts(meta.get("interpretability"))
    verdict = verdicts.get((best["method"], best["layer"]))
    st.markdown(f"Highest ROAD here: **{LABELS.get(best['method'], best['method'])}** at `{best['layer']}` "
                f"(ROAD {best['road']:+.3f})" + (f"; against the baselines: {verdict['text']}." if verdict else
                                                 "; not yet compared with baselines that know nothing of the model."))
    st.plotly_chart(road_figure(rows), key="card_road", theme=None)
    failing = randomisation_failures(meta.get("interpretability"))
    table = [{"method": LABELS.get(r["method"], r["method"]) + (f" ({FAILS})" if (r["method"], r["layer"]) in failing
                                                                  else ""), "layer": r["layer"],
              "ROAD": f"{r['road']:+.3f}" + (f" ± {r['road_sem']:.3f}" if r.get("road_sem") is not None else ""),
              "MoRF Δp": f"{r['morf']:+.3f}", "LeRF Δp": f"{r['lerf']:+.3f}",
              "heat on lesion": f"{r['heat_in_lesion']:.1%}" if r.get("heat_in_lesion") is not None else "–",
              "images": r["n"]} for r in rows]
    st.table(table, border="horizontal")
