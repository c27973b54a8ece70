"""How well the rule-based readers agree with labels set by eye: the artefact detector
(model.inference.artefacts) and the dermoscopic colours (model.inference.colours), on the labelled
images in tests/data/labelled (labels.csv; docs/artefacts-and-colours.md says how they were set).

Colours are read inside the dataset's own lesion mask, so the segmenter is not scored here; the
artefact detector sees the image alone, at the size it is stored (200x150, the app's working size
for such an upload).

Dermatologists' labels from another clinic: Derm7pt scores regression structures (white areas, blue
areas, or both) and the blue-whitish veil, which name two of the six colours. `external_colour_agreement`
reads the colours the app shows for such an image (its own outline, its own path) against them."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.data.preprocess import decode_image, read_mask
from model.inference.artefacts import ARTEFACT_KINDS, detect_artefacts
from model.inference.colours import COLOUR_NAMES, lesion_colours

PARTS = ("tune", "holdout")


@dataclass
class LabelledCase:
    image_id: str
    part: str                       # "tune" (rules set on it) or "holdout" (never looked at while tuning)
    rgb: np.ndarray
    mask: np.ndarray
    artefacts: set[str]             # kinds seen by eye
    colours: set[str] | None        # colours seen by eye; None where the image was not labelled for colour


def load_labelled(folder: str | Path) -> list[LabelledCase]:
    """The labelled images with their masks and labels (labels.csv: image_id, part, one 0/1 column per
    artefact kind, `colours` as a '; '-separated list, empty = not labelled for colour)."""
    folder = Path(folder)
    cases = []
    with open(folder / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            i = row["image_id"]
            colours = {c.strip() for c in row["colours"].split(";") if c.strip()} or None
            unknown = (colours or set()) - set(COLOUR_NAMES)
            if unknown or row["part"] not in PARTS:
                raise ValueError(f"{folder / 'labels.csv'}: {i} has unknown labels {unknown or row['part']}")
            cases.append(LabelledCase(
                i, row["part"], decode_image((folder / "images" / f"{i}.jpg").read_bytes()),
                read_mask(folder / "masks" / f"{i}_segmentation.png"),
                {k for k in ARTEFACT_KINDS if row[k].strip() == "1"}, colours))
    return cases


def balanced_accuracy(said: np.ndarray, truth: np.ndarray) -> float:
    """Mean of sensitivity and specificity; where one side has no case, the other alone."""
    parts = [r for r in (_rate(said, truth, True), _rate(said, truth, False)) if r is not None]
    return float(np.mean(parts)) if parts else float("nan")


def _rate(said: np.ndarray, truth: np.ndarray, positive: bool) -> float | None:
    sel = truth == positive
    return float((said[sel] == positive).mean()) if sel.any() else None


def _row(said: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((said & truth).sum())
    return {"n": int(len(truth)), "labelled_present": int(truth.sum()), "said_present": int(said.sum()),
            "sensitivity": _round(_rate(said, truth, True)), "specificity": _round(_rate(said, truth, False)),
            "precision": _round(tp / said.sum() if said.sum() else None),
            "balanced_accuracy": _round(balanced_accuracy(said, truth))}


def _round(v: float | None) -> float | None:
    return None if v is None or v != v else round(float(v), 3)


def colour_agreement(cases: list[LabelledCase]) -> dict[str, dict[str, dict]]:
    """Per part ('tune', 'holdout', 'all') and colour: sensitivity, specificity, balanced accuracy."""
    cases = [c for c in cases if c.colours is not None]
    said = {c.image_id: set(lesion_colours(c.rgb, c.mask)) for c in cases}
    return {part: {n: _row(np.array([n in said[c.image_id] for c in sel]), np.array([n in c.colours for c in sel]))
                   for n in COLOUR_NAMES}
            for part, sel in _parts(cases)}


def artefact_agreement(cases: list[LabelledCase]) -> dict[str, dict[str, dict]]:
    """Per part and artefact kind: precision and recall (= sensitivity) of the detector's image-level
    call (the kind covers at least its minimum area) against the labels."""
    said = {c.image_id: set(detect_artefacts(c.rgb).present) for c in cases}
    return {part: {k: _row(np.array([k in said[c.image_id] for c in sel]), np.array([k in c.artefacts for c in sel]))
                   for k in ARTEFACT_KINDS}
            for part, sel in _parts(cases)}


# Derm7pt columns and values that say a colour is present (Kawahara et al. 2019 scoring of the 7-point
# checklist): "white areas" are the white scar-like areas of regression, "combinations" hold white and
# blue areas; blue-gray is the blue areas of regression or the blue-whitish veil.
EXTERNAL_COLOUR_LABELS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "white": (("regression_structures", ("white areas", "combinations")),),
    "blue-gray": (("regression_structures", ("blue areas", "combinations")), ("blue_whitish_veil", ("present",))),
}


def external_colour_truth(criteria) -> dict[str, bool] | None:
    """Colour -> labelled present, from a record's Derm7pt (column, value) pairs; None when unscored."""
    values = {col: val.strip().lower() for col, val in criteria}
    if any(col not in values for rules in EXTERNAL_COLOUR_LABELS.values() for col, _ in rules):
        return None
    return {name: any(values[col] in positive for col, positive in rules)
            for name, rules in EXTERNAL_COLOUR_LABELS.items()}


def external_colour_agreement(records, colours_of, progress=None) -> dict[str, dict[str, dict]]:
    """Per part of the external set (and all) and labelled colour: the colours the app shows for the
    image (`colours_of(record)`, a set) against the dermatologists' structure labels."""
    scored = [(r, external_colour_truth(r.criteria)) for r in records]
    scored = [(r, t) for r, t in scored if t is not None]
    said = {}
    for k, (r, _) in enumerate(scored):
        said[r.image_id] = colours_of(r)
        if progress:
            progress(k + 1, len(scored))
    parts = sorted({r.part for r, _ in scored})
    out = {}
    for part in [*parts, "all"]:
        sel = [(r, t) for r, t in scored if part in (r.part, "all")]
        out[part] = {name: _row(np.array([name in said[r.image_id] for r, _ in sel]), np.array([t[name] for _, t in sel]))
                     for name in EXTERNAL_COLOUR_LABELS}
    return out


def _parts(cases: list[LabelledCase]):
    for part in PARTS:
        yield part, [c for c in cases if c.part == part]
    yield "all", cases
