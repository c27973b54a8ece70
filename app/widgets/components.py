"""Pure render helpers: numbers and arrays in, plotly figures / RGB images / table rows out.

No Streamlit calls and no torch: everything here is testable on plain numpy arrays.
"""
from __future__ import annotations

import io
import re
from typing import Sequence

import cv2
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from model.labels import display_name, is_malignant
from model.inference.measurements import Measurements

MALIGNANT_COLOUR = "#b03a2e"
BENIGN_COLOUR = "#2e6f95"
OUTLINE_COLOUR = (0, 230, 118)      # bright green, visible on skin tones and on dark lesions
MASK_COLOUR = (0, 200, 255)


# ----------------------------------------------------------------------------- charts
def class_label(code: str, wrap: int = 30) -> str:
    """'Full name (code)', broken onto two lines when long (plotly tick labels accept <br>)."""
    name = display_name(code)
    if len(name) > wrap and " / " in name:
        name = name.replace(" / ", " /<br>", 1)
    return f"{name} ({code})"


def melanoma_flag_text(raised: bool, p_mel: float, threshold: float) -> str:
    """What the melanoma flag means, beside its state (the Analyse page and the case report say the same)."""
    if raised:
        return (f"P(melanoma) {100 * p_mel:.1f}% is at or over the flag threshold {100 * threshold:.1f}%. A screening "
                "aid: many flagged images are not melanoma (the Model card says how the threshold was chosen and "
                "gives its measured sensitivity and specificity, on this model's test images and on another "
                "clinic's dermatoscope).")
    return (f"Melanoma flag not raised: P(melanoma) {100 * p_mel:.1f}% is under the threshold {100 * threshold:.1f}%. "
            "An unflagged lesion can still be a melanoma: the Model card gives the share of melanomas the flag misses.")


def class_bar_figure(rows: Sequence[tuple[str, float | None, str]], x_title: str, hover: str, *, row_px: int = 42,
                     base_px: int = 90, font_size: int = 14, right: int = 60, top: int = 40) -> go.Figure:
    """Horizontal bars on a 0-100% axis, one per (class code, value, text) of `rows`, the first on top;
    malignant classes red, hatched and marked. A row whose value is None keeps its place, without a bar."""
    order = list(rows)[::-1]  # plotly draws bottom-up
    fig = go.Figure()
    for malignant in (False, True):
        part = [(c, v, t) for c, v, t in order if is_malignant(c) == malignant and isinstance(v, (int, float))]
        if not part:
            continue
        colour = MALIGNANT_COLOUR if malignant else BENIGN_COLOUR
        fig.add_trace(go.Bar(
            y=[class_label(c) for c, _, _ in part], x=[float(v) for _, v, _ in part],
            orientation="h", name="malignant class" if malignant else "benign class",
            marker=dict(color=colour, line=dict(color=colour, width=1),
                        pattern=dict(shape="/" if malignant else "", fillmode="overlay",
                                     fgcolor="rgba(255,255,255,0.55)", size=7)),
            text=[t for _, _, t in part], textposition="outside", cliponaxis=False, hovertemplate=hover))
    fig.update_layout(
        template="plotly_white", barmode="overlay", height=base_px + row_px * len(order),
        margin=dict(l=10, r=right, t=top, b=40),
        font=dict(size=font_size, color="#1b2631", family="Source Sans Pro, Source Sans 3, sans-serif"),
        xaxis=dict(range=[0, 1], tickformat=".0%", title=x_title, fixedrange=True),
        yaxis=dict(categoryorder="array", categoryarray=[class_label(c) for c, _, _ in order],
                   fixedrange=True, automargin=True),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    return fig


def probability_figure(classes: Sequence[str], probabilities: Sequence[float]) -> go.Figure:
    """Horizontal bars, most likely class on top; malignant classes red, hatched and marked."""
    order = np.argsort(np.asarray(probabilities, float))[::-1]
    return class_bar_figure([(classes[i], float(probabilities[i]), f"{100 * float(probabilities[i]):.1f}%")
                             for i in order], "probability (calibrated)", "%{y}: %{x:.1%}<extra></extra>")


def recall_figure(recall: dict[str, float | None], support: dict[str, int | None]) -> go.Figure:
    """Per-class sensitivity (share of a class's images whose top class was right), one horizontal bar
    per class in the order given, malignant classes red and hatched as in probability_figure."""
    rows = [(c, v, f"{100 * float(v):.0f}% of {support.get(c) or '?'}" if isinstance(v, (int, float)) else "")
            for c, v in recall.items()]
    return class_bar_figure(rows, "sensitivity on the test split",
                            "%{y}: %{x:.1%} of its test images answered right<extra></extra>",
                            row_px=34, base_px=70, font_size=13, right=90, top=30)


# ----------------------------------------------------------------------------- images
def unit_map(values: np.ndarray) -> np.ndarray:
    """float32 copy of a map clipped to [0, 1], NaN as 0 (infinities clip): what np.clip(np.nan_to_num(v), 0, 1)
    gives, with the NaN pass only when a NaN is there (the clipped sum says so)."""
    v = np.clip(np.asarray(values, np.float32), 0, 1)
    if np.isnan(v.sum(dtype=np.float64)):
        v = np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0, 1)
    return v


def heatmap_overlay(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heatmap (jet colormap: red = strongest) over an RGB uint8 image."""
    heat = unit_map(heat)
    if heat.shape != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    a = float(np.clip(opacity, 0, 1))
    return cv2.addWeighted(np.ascontiguousarray(rgb, np.uint8), 1 - a, colour, a, 0)   # one uint8 pass


def outline_image(rgb: np.ndarray, mask: np.ndarray | None, colour=OUTLINE_COLOUR) -> np.ndarray:
    """The image with the mask's outer contour drawn (dark halo + colour line, scaled to the image)."""
    out = np.ascontiguousarray(rgb.copy())
    if mask is None or not np.any(mask):
        return out
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    t = max(2, round(max(rgb.shape[:2]) / 250))
    cv2.drawContours(out, contours, -1, (0, 0, 0), t + 2, lineType=cv2.LINE_AA)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), t, lineType=cv2.LINE_AA)
    return out


def mask_image(rgb: np.ndarray, mask: np.ndarray | None, opacity: float = 0.4) -> np.ndarray:
    """The segmentation mask as a translucent fill plus its outline."""
    out = rgb.astype(np.float32)
    if mask is not None and np.any(mask):
        m = np.asarray(mask, bool)
        out[m] = (1 - opacity) * out[m] + opacity * np.array(MASK_COLOUR, np.float32)
    return outline_image(np.uint8(out), mask, MASK_COLOUR)


MAP_COLOURS = "red = strong, blue = weak"  # jet, the one colour map of every heatmap and feature map shown


def colorize(values: np.ndarray, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A [0, 1] map as a jet RGB image (MAP_COLOURS, as the overlays), optionally resized (nearest:
    shows the real grid)."""
    v = np.uint8(255 * unit_map(values))
    if size_hw is not None:
        v = cv2.resize(v, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def feature_tiles(maps: np.ndarray, channels: Sequence[int], means: Sequence[float],
                  tile: int = 120) -> tuple[list[np.ndarray], list[str]]:
    """One jet tile per feature map (most active first) and its caption: each map is
    `colorize(m, tile size)`, the colour map applied to all tiles in one call."""
    maps = np.asarray(maps, np.float32)
    captions = [f"ch {ch} · {mean:.2f}" for _, ch, mean in zip(maps, channels, means)]
    k = len(captions)
    if k == 0:
        return [], []
    h, w = maps.shape[1:]
    s = tile / max(h, w)
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    v = np.uint8(255 * unit_map(maps[:k]))
    strip = np.concatenate([cv2.resize(m, (tw, th), interpolation=cv2.INTER_NEAREST).reshape(th, tw) for m in v])
    rgb = cv2.cvtColor(cv2.applyColorMap(strip, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return list(rgb.reshape(k, th, tw, 3)), captions


def fit_within(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never enlarge) so the longer side is at most max_side."""
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- tables and text
MEASURE_NOTES = {
    "area": "Lesion pixels, and their share of the image.",
    "diameter": "Longest distance across the outline (no physical scale: not mm).",
    "asym_major": "Mismatch after mirroring about the long axis: 0 symmetric, 1 none overlaps.",
    "asym_minor": "Same about the short axis.",
    "compactness": "Perimeter² / (4π·area): 1 for a circle, higher for an irregular border.",
    "solidity": "Area / convex-hull area: 1 smooth and convex, lower for notches.",
    "colours": ("The six colours of the ABCD rule (white, red, light brown, dark brown, blue-gray, black): each lesion "
                "pixel, white-balanced on the skin around it and with specular highlights left out, counts for the "
                "nearest CIELAB reference colour within a distance; a colour is listed when it covers its minimum "
                "share of the lesion. It misses most white (regression) and blue-gray areas that dermatologists see, so a colour "
                "not listed may still be there; agreement with labels set by eye and with dermatologists' labels: "
                "model card."),
    "colour_std": "Mean RGB standard deviation inside the lesion (0–1): colour variegation.",
}


def measurement_rows(m: Measurements) -> list[dict[str, str]]:
    """Rows for the measurements table: what, value with unit, one-line meaning."""
    rows = [
        ("Area", f"{m.area_px:,} px ({m.area_pct:.1f}% of image)", "area"),
        ("Longest diameter", f"{m.longest_diameter_px:,.0f} px", "diameter"),
        ("Asymmetry, long axis", f"{m.asymmetry_major:.2f}", "asym_major"),
        ("Asymmetry, short axis", f"{m.asymmetry_minor:.2f}", "asym_minor"),
        ("Border compactness", f"{m.compactness:.2f}", "compactness"),
        ("Solidity", f"{m.solidity:.2f}", "solidity"),
        ("Colours present", ", ".join(m.colours) or "none found", "colours"),
        ("Colour variation (std)", f"{m.colour_std:.3f}", "colour_std"),
    ]
    return [{"Measure": a, "Value": b, "Meaning": MEASURE_NOTES[k]} for a, b, k in rows]


def runtime_line(runtime: dict[str, str]) -> str:
    """Small print: which runtime ran each stage (model.nets.engine), e.g. CAMs forward-only or by autograd."""
    names = {"classifier": "classification", "cam": "CAMs", "tta": "flipped views", "segmenter": "segmentation"}
    return "Ran on: " + "; ".join(f"{names.get(k, k)} — {md_escape(v)}" for k, v in runtime.items()) + "."


def percent(p: float | None, digits: int = 1) -> str:
    return "–" if p is None else f"{100 * p:.{digits}f}%"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_escape(text: str, limit: int = 200) -> str:
    """Make user-supplied text (file names, messages quoting a file) inert in Streamlit markdown."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\n", " "))[:limit]
