"""Plotly figures of measured results and the HTML evaluation report (no torch)."""
from __future__ import annotations

import html
import json
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from model.labels import display_name


def confusion_figure(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str = "Confusion matrix",
                     normalize: bool = True) -> go.Figure:
    """Heatmap, rows = true class; cells show row-normalised recall and raw counts."""
    cm = np.asarray(cm, float)
    rows = cm.sum(axis=1, keepdims=True)
    z = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    text = [[f"{z[i, j]:.2f}<br>({int(cm[i, j])})" for j in range(len(classes))] for i in range(len(classes))]
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1 if normalize else None,
                               hovertemplate="true %{y} → predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      height=460, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def roc_figure(curves: dict[str, tuple[Sequence[float], Sequence[float], float | None]]) -> go.Figure:
    """One-vs-rest ROC curves: {class: (fpr, tpr, auc)}."""
    fig = go.Figure()
    for cls, (fpr, tpr, auc) in curves.items():
        label = f"{cls} (AUC {auc:.3f})" if auc is not None else cls
        fig.add_trace(go.Scatter(x=list(fpr), y=list(tpr), mode="lines", name=label))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             showlegend=False))
    fig.update_layout(title="ROC curves (one vs rest)", xaxis_title="false-positive rate",
                      yaxis_title="true-positive rate", height=460, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def reliability_figure(bins: dict[str, dict[str, list[float]]]) -> go.Figure:
    """Reliability diagram: {'before': {'confidence': [...], 'accuracy': [...], 'count': [...]}, 'after': ...}."""
    fig = go.Figure()
    for name, b in bins.items():
        keep = [i for i, c in enumerate(b["count"]) if c > 0]
        fig.add_trace(go.Scatter(x=[b["confidence"][i] for i in keep], y=[b["accuracy"][i] for i in keep],
                                 mode="lines+markers", name=f"{name} temperature scaling",
                                 text=[f"n={b['count'][i]}" for i in keep]))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfect calibration"))
    fig.update_layout(title="Reliability diagram (top-class confidence)", xaxis_title="confidence",
                      yaxis_title="accuracy", height=420, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def history_figure(history: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> go.Figure:
    """Training curves from a bundle's per-epoch log."""
    fig = go.Figure()
    if history:
        keys = keys or [k for k in history[0] if k not in ("epoch", "lr", "images_per_s", "epoch_s")]
        epochs = [h["epoch"] for h in history]
        for k in keys:
            fig.add_trace(go.Scatter(x=epochs, y=[h.get(k) for h in history], mode="lines+markers", name=k))
    fig.update_layout(title="Training log", xaxis_title="epoch", height=380, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def per_class_table(report: dict) -> list[dict[str, Any]]:
    """Rows for a per-class metrics table."""
    rows = []
    for cls, m in report.get("per_class", {}).items():
        rows.append({"class": cls, "name": display_name(cls), "support": m["support"],
                     "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                     "f1": round(m["f1"], 3), "auc": None if m["auc"] is None else round(m["auc"], 3)})
    return rows


def html_report(title: str, summary: dict[str, Any], figures: Sequence[go.Figure],
                tables: dict[str, list[dict[str, Any]]] | None = None, note: str = "") -> str:
    """A self-contained HTML page (plotly from CDN when opened online, data inline)."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<script src='https://cdn.plot.ly/plotly-2.35.2.min.js'></script>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    parts.append("<table>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()) + "</table>")
    for name, rows in (tables or {}).items():
        if rows:
            cols = list(rows[0])
            parts.append(f"<h2>{html.escape(name)}</h2><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                         + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols)
                                             + "</tr>" for r in rows) + "</table>")
    for i, fig in enumerate(figures):
        parts.append(f"<div id='fig{i}'></div><script>Plotly.newPlot('fig{i}', {fig.to_json()});</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else str(v)
