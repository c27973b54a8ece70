"""The downloadable case report: one self-contained HTML file (images inline as base64 PNG,
no scripts, no external requests) with what the Analyse page showed."""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from typing import Mapping

import numpy as np

from app.analyse.checklist import checklist_html
from app.widgets.components import fit_within, heatmap_overlay, measurement_rows, outline_image, percent, png_bytes
from model.labels import display_name, is_malignant
from model.inference.results import Analysis

DISCLAIMER = ("Research and teaching tool, NOT a medical device. The output is not a diagnosis and "
              "must not be used to make clinical decisions.")
_CSS = """body{font-family:system-ui,Segoe UI,Arial,sans-serif;color:#1b2631;max-width:960px;margin:auto;padding:1em}
.warn{background:#fff4e5;border-left:6px solid #e67e22;padding:.6em 1em;margin:.8em 0}
.disc{background:#fdecea;border-left:6px solid #b03a2e;padding:.6em 1em;font-weight:600}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d5dbe1;padding:4px 8px;text-align:left}
.bar{background:#2e6f95;height:14px}.bar.m{background:#b03a2e}
figure{display:inline-block;margin:.4em;vertical-align:top}figcaption{font-size:.9em;max-width:320px}
img{max-width:320px;border:1px solid #ccc}"""


def _img(rgb: np.ndarray, caption: str) -> str:
    data = base64.b64encode(png_bytes(fit_within(rgb, 640))).decode()
    return (f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: list[dict], escape_cells: bool = True) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v)) if escape_cells else v}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _probabilities(a: Analysis) -> str:
    rows = []
    for i in np.argsort(-a.probabilities):
        c, p = a.classes[i], float(a.probabilities[i])
        m = is_malignant(c)
        rows.append({"Class": html.escape(f"{display_name(c)} ({c})" + (" – malignant" if m else "")),
                     "Probability": percent(p),
                     "": f"<div class='bar{' m' if m else ''}' style='width:{max(1, round(200 * p))}px'></div>"})
    return _table(rows, escape_cells=False)


def build_case_report(a: Analysis, *, file_name: str, image_sha256: str, cams: Mapping[str, np.ndarray],
                      cam_class: str, cam_layer: str, attention: Mapping[str, float | None],
                      method_labels: Mapping[str, str], opacity: float = 0.5, ground_truth: str | None = None,
                      lesion_found: bool = True, created: datetime | None = None) -> str:
    """HTML report of one analysis. `cams` are the heatmaps the user viewed (method -> map)."""
    created = created or datetime.now(timezone.utc)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Case report: {e(file_name)}</title>"
             f"<style>{_CSS}</style></head><body><h1>Dermoscopy case review</h1>",
             f"<p class='disc'>{e(DISCLAIMER)}</p>"]
    facts = {"File": file_name, "Image SHA-256": image_sha256[:16] + "…",
             "Report created": created.strftime("%Y-%m-%d %H:%M UTC"),
             "Image analysed at": f"{a.image.shape[1]}×{a.image.shape[0]} px",
             **{f"Model ({k})": v for k, v in a.model_info.items()}}
    parts.append(_table([{"Item": k, "Value": v} for k, v in facts.items()]))
    if a.quality_warnings:
        parts.append("<div class='warn'><b>Quality check failed – probabilities are not reliable:</b><ul>"
                     + "".join(f"<li>{e(w)}</li>" for w in a.quality_warnings) + "</ul></div>")
    if a.low_confidence:
        parts.append("<div class='warn'><b>Low confidence:</b> " + e("; ".join(a.uncertainty_reasons)) + "</div>")
    heading = "Class probabilities (not reliable: quality check failed)" if a.gated else "Class probabilities"
    parts.append(f"<h2>{heading}</h2>" + _probabilities(a))
    summary = {"Top class": f"{display_name(a.top_class)} ({percent(a.top_probability)})",
               "Malignant classes summed (mel + bcc + akiec)": percent(a.malignant_probability),
               "Uncertainty (normalised entropy, 0–1)": f"{a.entropy:.2f}"}
    if a.tta_agreement is not None:
        summary["Flipped views agreeing on top class"] = percent(a.tta_agreement, 0)
        summary["Spread of top-class probability over views (std)"] = percent(a.tta_spread)
    parts.append(_table([{"Summary": k, "Value": v} for k, v in summary.items()]))
    if ground_truth:
        parts.append(f"<p><b>Ground truth (example image):</b> {e(ground_truth)}</p>")

    parts.append("<h2>Images</h2>" + _img(a.image, "Image as analysed"))
    if a.lesion_mask is not None:
        parts.append(_img(outline_image(a.image, a.lesion_mask), "Lesion outline (segmentation model)"))
    parts.append(f"<h2>Heatmaps for “{e(display_name(cam_class))}” at layer {e(cam_layer)}</h2>")
    for m, heat in cams.items():
        share = attention.get(m)
        note = f" · attention on lesion {percent(share, 0)}" if share is not None else ""
        parts.append(_img(heatmap_overlay(a.image, heat, opacity), f"{method_labels.get(m, m)}{note}"))
    parts.append("<p>Heatmaps show which image regions most influenced the score of the chosen class "
                 "(red = strongest). They are not a segmentation and can highlight artefacts.</p>")
    parts.append(checklist_html(a))
    if a.lesion_mask is not None and not lesion_found:
        parts.append("<p>The segmentation model found no clear lesion: no measurements.</p>")
    if a.measurements is not None and lesion_found:
        parts.append("<h2>Lesion measurements (from the segmentation mask)</h2>"
                     + _table(measurement_rows(a.measurements)))
    if a.notes:
        parts.append("<h2>Notes on the image</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>")
    parts.append(f"<p class='disc'>{e(DISCLAIMER)}</p></body></html>")
    return "\n".join(parts)
