"""The downloadable case report: one self-contained HTML file (images inline as base64 PNG,
no scripts, no external requests) with what the Analyse page showed."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np

from app.analyse.checklist import checklist_html
from app.analyse.heat_notes import HEAT_WARNING_MEANING, heat_caption
from app.widgets.components import (MAP_COLOURS, feature_tiles, fit_within, heatmap_overlay, measurement_rows, melanoma_flag_text,
                                    outline_image, percent, png_bytes, runtime_line)
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


def _jpeg(data: bytes, caption: str) -> str:
    return (f"<figure><img alt='{html.escape(caption)}' src='data:image/jpeg;base64,{base64.b64encode(data).decode()}'>"
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


REPORT_KEY = "case_report"  # session state: the page's report builder (a callable), for the tests
HIDDEN = ("The image failed the quality checks, so the model's output stayed hidden on the page and is left out "
          "of this report: no probabilities, prediction set, similar cases' vote or explained class.")
# the page's section headings, each a <h2> here (tests/test_app.py checks every heading the page shows)
CHECKLIST = "7-point checklist: what the model sees, in dermoscopic criteria"
NO_PROBES = "This classifier has no 7-point concept probes."
CHECKLIST_GATED = ("The image failed the quality checks: these criteria are read from the same features as the "
                   "withheld probabilities and are no more reliable.")
WHAT_IF = "What if…? Known confounders"
SETS, HEAT, LESION, FMAPS, DETAILS = ("Prediction set and similar confirmed cases", "Where the model looked",
                                      "Lesion outline and measurements", "Feature maps", "Details and report")


@dataclass
class Shown:
    """What the Analyse page showed besides the Analysis: the choices and the page-side figures."""
    cams: Mapping[str, np.ndarray] = field(default_factory=dict)   # method -> heatmap viewed
    cam_class: str | None = None
    cam_layer: str | None = None
    attention: Mapping[str, float | None] = field(default_factory=dict)
    method_labels: Mapping[str, str] = field(default_factory=dict)
    opacity: float = 0.5
    heat_warning: str | None = None
    heat: Mapping[str, object] = field(default_factory=dict)        # method -> heat shares (lesion, artefacts)
    heat_notes: Mapping[str, str] = field(default_factory=dict)     # what the page said beside the heatmaps
    road: Mapping[str, dict] = field(default_factory=dict)          # method -> {"road", "morf", "lerf"}
    coverage: int | None = None                                     # prediction-set coverage, %
    ground_truth: str | None = None
    lesion_found: bool = True
    output_shown: bool = True       # False: the gate hid the model's output and it was not opened
    what_ifs: Sequence[dict] = ()   # the what-ifs shown: {"name", "top_class", "rows"} (app.analyse.whatif)


def _answer(a: Analysis, v: Shown) -> list[str]:
    """Probabilities, the melanoma flag, the malignant sum with its prior, uncertainty (or why they are hidden)."""
    from app.analyse.sections import PRIOR_NOTE

    e = html.escape
    if not v.output_shown:
        return [f"<div class='warn'>{e(HIDDEN)}</div>"]
    parts = []
    if a.low_confidence:
        parts.append("<div class='warn'><b>Low confidence:</b> " + e("; ".join(a.uncertainty_reasons)) + "</div>")
    heading = "Class probabilities (not reliable: quality check failed)" if a.gated else "Class probabilities"
    parts.append(f"<h2>{heading}</h2>" + _probabilities(a))
    if a.melanoma_flag is not None:  # the page's sentences (app/analyse/sections.py)
        text = html.escape(melanoma_flag_text(a.melanoma_flag, float(a.probabilities[a.classes.index("mel")]),
                                              a.melanoma_threshold))
        parts.append(f"<p><b>Melanoma flag raised:</b> {text}</p>" if a.melanoma_flag else f"<p>{text}</p>")
    summary = {"Top class": f"{display_name(a.top_class)} ({percent(a.top_probability)})",
               "Malignant classes summed (mel + bcc + akiec)": percent(a.malignant_probability),
               "Uncertainty (normalised entropy, 0–1)": f"{a.entropy:.2f}"}
    if a.tta_agreement is not None:
        summary["Flipped views agreeing on top class"] = percent(a.tta_agreement, 0)
        summary["Spread of top-class probability over views (std)"] = percent(a.tta_spread)
    parts.append(_table([{"Summary": k, "Value": v} for k, v in summary.items()]) + f"<p>{e(PRIOR_NOTE)}</p>")
    return parts


def _aids(a: Analysis, v: Shown) -> list[str]:
    """The prediction set with its notes; the similar cases, their vote and whether it disagrees."""
    from app.widgets.aids import HIDDEN_AIDS, neighbour_caption, set_at, vote_note
    from model.aids.conformal import coverage_phrase, set_notes

    e = html.escape
    parts = [f"<h2>{SETS}</h2>"]
    if a.similar is not None and a.similar.in_reference:
        parts.append(f"<div class='warn'>{e(a.similar.in_reference)}</div>")
    if not v.output_shown:
        return parts + [f"<p>{e(HIDDEN_AIDS)}</p>"]
    codes = set_at(a, v.coverage) if v.coverage is not None else None
    if codes is None:
        parts.append("<p>No prediction set: this classifier has no conformal calibration.</p>")
    else:
        names = ", ".join(f"{display_name(c)} ({c})" for c in codes) or "(empty)"
        parts.append(f"<p><b>Prediction set at {v.coverage}%:</b> {e(names)}</p>"
                     f"<p>The true diagnosis is in such a set {e(coverage_phrase(v.coverage, a.set_stricter))}, on "
                     "images like the validation split.</p><ul>"
                     + "".join(f"<li>{e(n)}</li>" for n in set_notes(codes, a.top_class, v.coverage)) + "</ul>")
    parts.append("<h3>Similar confirmed cases</h3>")
    if a.similar is None:
        return parts + [f"<p>{e(a.similar_error or 'No similar cases available.')}</p>"]
    line, disagree = vote_note(a)
    parts.append(f"<p>{e(line.replace('**', ''))}</p>")
    if disagree:
        parts.append("<div class='warn'><b>Disagree:</b> the closest confirmed cases point elsewhere than the "
                     "classifier's softmax.</div>")
    for n in a.similar.neighbours:
        caption = neighbour_caption(n).replace("**", "").replace("  \n", " · ")
        parts.append(_jpeg(n.thumbnail, caption) if n.thumbnail else f"<p>{e(caption)}</p>")
    return parts


def _heat(a: Analysis, v: Shown) -> list[str]:
    from app.analyse.faithfulness import EXPLAIN

    e = html.escape
    if not v.cams:
        return [f"<h2>{HEAT}</h2><p>No heatmap was shown (no class or method chosen).</p>"]
    parts = [f"<h2>{HEAT}</h2><p>Heatmaps for “{e(display_name(v.cam_class))}” at layer {e(str(v.cam_layer))}.</p>"]
    for m, heat in v.cams.items():
        share = v.attention.get(m)
        note = (heat_caption(v.heat.get(m), v.lesion_found) if v.heat else
                f" · {percent(share, 0)} of heat on lesion" if share is not None else "")
        parts.append(_img(heatmap_overlay(a.image, heat, v.opacity), f"{v.method_labels.get(m, m)}{note}"))
    parts.append("<p>Heatmaps show which image regions most influenced the score of the chosen class "
                 f"({MAP_COLOURS}). They are not a segmentation and can highlight artefacts.</p>")
    notes = dict(v.heat_notes) or ({"warning": v.heat_warning} if v.heat_warning else {})
    for kind in ("touching", "warning"):
        if notes.get(kind):
            parts.append(f"<div class='warn'>{e(notes[kind])}</div>")
    if notes.get("warning"):
        parts.append(f"<p>{e(HEAT_WARNING_MEANING)}</p>")
    if notes.get("unset"):
        parts.append(f"<p>{e(notes['unset'])}</p>")
    if v.road:
        rows = [{"heatmap": v.method_labels.get(m, m), "ROAD (higher = more faithful)": f"{s['road']:+.3f}",
                 "MoRF Δp": f"{s['morf']:+.3f}", "LeRF Δp": f"{s['lerf']:+.3f}"} for m, s in v.road.items()]
        parts.append("<h3>Faithfulness (ROAD)</h3>" + _table(rows) + f"<p>{e(EXPLAIN)}</p>")
    return parts


def _what_ifs(v: Shown) -> list[str]:
    """The what-ifs the page showed, each with its probability rows (none while the output is hidden)."""
    e = html.escape
    if not v.output_shown:
        return [f"<h2>{WHAT_IF}</h2><p>Hidden with the model's output.</p>"]
    if not v.what_ifs:
        return [f"<h2>{WHAT_IF}</h2><p>No what-if was chosen.</p>"]
    parts = [f"<h2>{WHAT_IF}</h2>"]
    for w in v.what_ifs:
        parts.append(f"<p><b>{e(w['name'])}</b>: top class {e(w['top_class'])}</p>" + _table(w["rows"]))
    return parts


def _checklist(a: Analysis) -> list[str]:
    """The 7-point checklist panel (app/analyse/checklist.py), under the page's heading."""
    e = html.escape
    parts = [f"<h2>{CHECKLIST}</h2>"]
    if a.checklist is None:
        return parts + [f"<p>{e(a.checklist_error or NO_PROBES)}</p>"]
    if a.gated:
        parts.append(f"<div class='warn'>{e(CHECKLIST_GATED)}</div>")
    return parts + [checklist_html(a)]


def _lesion(a: Analysis, v: Shown) -> list[str]:
    parts = [f"<h2>{LESION}</h2>"]
    if a.lesion_mask is None:
        return parts + ["<p>No segmentation model was loaded: no outline and no measurements.</p>"]
    parts.append(_img(outline_image(a.image, a.lesion_mask), "Lesion outline (segmentation model)"))
    if not v.lesion_found:
        parts.append("<p>The segmentation model found no clear lesion: no measurements.</p>")
    elif a.measurements is not None:
        parts.append(_table(measurement_rows(a.measurements)))
    return parts


def _feature_maps(a: Analysis) -> list[str]:
    fm = a.feature_maps
    if fm is None or not len(fm.channels):
        return [f"<h2>{FMAPS}</h2><p>No feature maps.</p>"]
    tiles, captions = feature_tiles(fm.maps, fm.channels, fm.mean_activation, tile=96)
    return [f"<h2>{FMAPS}</h2><p>Most active channels of {html.escape(fm.layer)}, strongest first, each scaled "
            f"on its own ({MAP_COLOURS}).</p>"] + [_img(t, c) for t, c in zip(tiles, captions)]


def _details(a: Analysis, v: Shown) -> list[str]:
    e = html.escape
    parts = [f"<h2>{DETAILS}</h2>"]
    if a.notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>")
    if a.runtime:
        parts.append(f"<p>{e(runtime_line(a.runtime).replace(chr(92), ''))}</p>")
    return parts


def build_case_report(a: Analysis, *, file_name: str, image_sha256: str, cams: Mapping[str, np.ndarray] = None,
                      cam_class: str | None = None, cam_layer: str | None = None,
                      attention: Mapping[str, float | None] | None = None,
                      method_labels: Mapping[str, str] | None = None, opacity: float = 0.5,
                      ground_truth: str | None = None, lesion_found: bool = True, created: datetime | None = None,
                      shown: Shown | None = None) -> str:
    """HTML report of one analysis: every section the Analyse page showed, under the page's own headings.
    `shown` carries the page's choices and figures; the older keyword arguments fill it when it is None."""
    v = shown or Shown(cams=cams or {}, cam_class=cam_class, cam_layer=cam_layer, attention=attention or {},
                       method_labels=method_labels or {}, opacity=opacity, ground_truth=ground_truth,
                       lesion_found=lesion_found)
    created = created or datetime.now(timezone.utc)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Case report: {e(file_name)}</title>"
             f"<style>{_CSS}</style></head><body><h1>Dermoscopy case review</h1>",
             f"<p class='disc'>{e(DISCLAIMER)}</p>"]
    facts = {"File": file_name, "Image SHA-256": image_sha256[:16] + "…",
             "Report created": created.strftime("%Y-%m-%d %H:%M UTC"),
             "Image analysed at": f"{a.image.shape[1]}×{a.image.shape[0]} px",
             **{f"Model ({k})": val for k, val in a.model_info.items()}}
    parts.append(_table([{"Item": k, "Value": val} for k, val in facts.items()]))
    if a.quality_warnings:
        parts.append("<div class='warn'><b>Image quality check failed — the probabilities below are not reliable."
                     "</b><ul>"
                     + "".join(f"<li>{e(w)}</li>" for w in a.quality_warnings) + "</ul></div>")
    parts += _answer(a, v)
    if v.ground_truth:
        parts.append(f"<p><b>Ground truth (example image):</b> {e(v.ground_truth)}</p>")
    parts.append(_img(a.image, "Image as analysed"))
    parts += _aids(a, v) + _heat(a, v) + _what_ifs(v) + _checklist(a) + _lesion(a, v) + _feature_maps(a) + _details(a, v)
    parts.append(f"<p class='disc'>{e(DISCLAIMER)}</p></body></html>")
    return "\n".join(parts)
