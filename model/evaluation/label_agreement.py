"""How well the rule-based readers agree with labels set by eye: the artefact detector
(model.inference.artefacts) and the dermoscopic colours (model.inference.colours), on the labelled
images in tests/data/labelled (labels.csv; docs/artefacts-and-colours.md says how they were set).

Colours are read inside the dataset's own lesion mask, so the segmenter is not scored here; the
artefact detector sees the image alone, at the size it is stored (200x150, the app's working size
for such an upload)."""
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


def _parts(cases: list[LabelledCase]):
    for part in PARTS:
        yield part, [c for c in cases if c.part == part]
    yield "all", cases
