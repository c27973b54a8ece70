"""Plotly figures of a review study's statistics (rows from review.stats). No Streamlit, no torch."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

BEFORE, AFTER, AI = "#7f8c8d", "#1f5f8b", "#c0392b"


def _layout(fig: go.Figure, title: str, y_title: str, pct: bool = True) -> go.Figure:
    fig.update_layout(template="plotly_white", barmode="group", title=title, height=360,
                      margin=dict(l=10, r=10, t=60, b=40), legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"),
                      yaxis=dict(title=y_title, range=[0, 1.05] if pct else None, tickformat=".0%" if pct else None,
                                 rangemode="tozero"))
    return fig


def accuracy_figure(rows: Sequence[dict], key: str, title: str) -> go.Figure:
    """Grouped bars per row (`key`: reader or class): reader before the AI, after it, the AI's own
    (over the reads where the gate showed the AI's answer; withheld answers are counted apart)."""
    x = [str(r[key]) for r in rows]
    fig = go.Figure()
    for name, field, colour, n in (("reader before AI", "before", BEFORE, "n"), ("reader after AI", "after", AFTER, "n"),
                                   ("AI alone (answers the gate showed)", "ai", AI, "ai_n")):
        fig.add_trace(go.Bar(x=x, y=[r[field] for r in rows], name=name, marker_color=colour,
                             text=[f"{r[field]:.0%}" if r[field] is not None else "" for r in rows],
                             textposition="outside",
                             customdata=[[r.get(n, r["n"]), r.get("ai_gated", 0)] for r in rows],
                             hovertemplate="%{x}: %{y:.1%} of %{customdata[0]} reads"
                             + (" (%{customdata[1]} withheld by the gate, not counted)" if field == "ai" else "")
                             + "<extra></extra>"))
    return _layout(fig, title, "accuracy")


def changes_figure(rows: Sequence[dict], key: str = "reader") -> go.Figure:
    """How often the AI turned a right read wrong, and a wrong read right."""
    x = [str(r[key]) for r in rows]
    fig = go.Figure([go.Bar(x=x, y=[r["right_to_wrong"] for r in rows], name="right → wrong", marker_color=AI),
                     go.Bar(x=x, y=[r["wrong_to_right"] for r in rows], name="wrong → right", marker_color=AFTER)])
    return _layout(fig, "Reads the AI changed", "reads", pct=False)


def heatmap_figure(rows: Sequence[dict], labels: dict[str, str]) -> go.Figure:
    """Per CAM method: share of heatmaps readers rated 'on an artefact' beside the mean automatic
    share of heat on the lesion."""
    x = [labels.get(r["method"], r["method"]) for r in rows]
    fig = go.Figure([
        go.Bar(x=x, y=[r["on_artefact"] for r in rows], name="rated 'on an artefact'", marker_color=AI,
               customdata=[r["rated"] for r in rows], hovertemplate="%{x}: %{y:.0%} of %{customdata}<extra></extra>"),
        go.Bar(x=x, y=[r["heat_in_lesion"] for r in rows], name="heat on the lesion (automatic, mean)",
               marker_color=AFTER)])
    return _layout(fig, "Heatmaps by CAM method", "share")
