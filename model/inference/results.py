"""What an analysis returns: plain dataclasses of numpy arrays and numbers (no torch), so the
UI can render them and Streamlit can cache them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.inference.measurements import Measurements


@dataclass
class FeatureMaps:
    layer: str
    channels: list[int]          # channel indices, most active first
    mean_activation: list[float]
    maps: np.ndarray             # (k, h, w) float32 in [0, 1], each scaled on its own


@dataclass
class ChecklistReading:
    """The 7-point checklist read from the classifier's features by the bundle's concept probes."""
    names: list[str]                         # model.data.checklist.NAMES order
    labels: list[str]
    weights: list[int]                       # 2 major, 1 minor
    presence: np.ndarray                     # (7,) estimated probability each criterion is present
    present: list[bool]                      # presence at or over model.data.checklist.PRESENT_AT
    auroc: list[float | None]                # measured on Derm7pt report (meta.json); None: not measured
    auroc_ci: list[list[float] | None]
    reliable: list[bool]                     # AUROC at least model.data.checklist.RELIABLE_AUROC
    score: int                               # sum of the weights of the criteria present
    suggests_melanoma: bool                  # score >= 3
    maps: np.ndarray | None                  # (7, h, w) float32 in [0, 1]: the probe's sigmoid at each position of the
                                             # last feature map (views resize it bilinearly, as a CAM); None when
                                             # the classifier's head cannot be followed from its last stage

    def as_dict(self) -> dict[str, float]:
        return {n: round(float(p), 5) for n, p in zip(self.names, self.presence)}


@dataclass
class Analysis:
    image: np.ndarray                        # RGB uint8 as analysed (downscaled if very large)
    scale_to_original: float                 # multiply pixel lengths by this for the uploaded image
    classes: list[str]
    display_names: list[str]
    probabilities: np.ndarray                # calibrated (temperature), TTA-averaged when TTA is on
    malignant_probability: float
    melanoma_flag: bool | None               # P(mel) at or over the bundle's validation-chosen threshold
    melanoma_threshold: float | None
    entropy: float                           # normalised to [0, 1]
    tta_spread: float | None                 # std of the top class's probability over TTA views
    tta_agreement: float | None              # share of views whose top class is the same
    low_confidence: bool
    uncertainty_reasons: list[str]
    quality_warnings: list[str]              # gate: tiny, blurred, unlike training data, no lesion
    ood_distance: float | None
    ood_threshold: float | None
    cam_class: str
    cam_layer: str
    cams: dict[str, np.ndarray]              # method -> (H, W) float32 in [0, 1] at image resolution
    attention_on_lesion: dict[str, float | None]
    feature_maps: FeatureMaps | None
    lesion_mask: np.ndarray | None           # (H, W) bool
    measurements: Measurements | None
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)   # wall-clock laps, one after another
    parallel_ms: dict[str, float] = field(default_factory=dict)  # stages run beside those laps (their own time)
    model_info: dict[str, str] = field(default_factory=dict)
    similar: Any = None                      # model.aids.similar.SimilarCases: k nearest training cases, kNN vote
    similar_error: str | None = None         # why there are no similar cases (no or mismatched reference set)
    prediction_sets: dict[int, list[str]] = field(default_factory=dict)  # coverage % -> conformal set
    set_stricter: dict[str, int] = field(default_factory=dict)  # classes calibrated stricter, points (conformal)
    runtime: dict[str, str] = field(default_factory=dict)   # stage -> what ran it (model.nets.engine)
    checklist: ChecklistReading | None = None                # the 7-point checklist from the concept probes
    checklist_error: str | None = None                       # why there is none (no or mismatched probes)
    artefacts: Any = None                    # model.inference.artefacts.Artefacts: ink, ruler, vignette, hair masks
    heat: dict[str, Any] = field(default_factory=dict)      # method -> model.explain.attention.HeatShares (or None)
    outline_touches: list[str] = field(default_factory=list)  # artefact kinds the lesion outline runs into

    @property
    def top_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def top_class(self) -> str:
        return self.classes[self.top_index]

    @property
    def top_probability(self) -> float:
        return float(self.probabilities[self.top_index])

    @property
    def gated(self) -> bool:
        """True when quality checks say the answer should not be taken at face value."""
        return bool(self.quality_warnings)


# the gate's short words (model.inference.gate); "low confidence" is the uncertainty signal, not the gate
GATE_FLAGS = ("tiny image", "blurred", "unlike training images", "colours unlike dermoscopy", "grayscale",
              "no lesion found")


def gated(flags) -> bool:
    """True when the gate withholds the answer: a flag of the gate, not only low confidence."""
    return any(f in GATE_FLAGS for f in flags)


@dataclass
class BatchPrediction:
    name: str
    probabilities: np.ndarray | None
    top_class: str | None
    top_probability: float | None
    malignant_probability: float | None
    entropy: float | None
    flags: list[str]
    error: str | None = None
    melanoma_flag: bool | None = None
    notes: list[str] = field(default_factory=list)   # conversions made while decoding
    prediction_sets: dict[int, list[str]] = field(default_factory=dict)  # coverage % -> conformal set
    similar: Any = None                               # model.aids.similar.SimilarCases (no thumbnails)
    concepts: dict[str, float] | None = None          # criterion -> estimated presence (concept probes)
    seven_point_score: int | None = None              # from the probes' criteria present

    @property
    def gated(self) -> bool:
        """The gate withholds this answer (the Analyse page would hide it)."""
        return gated(self.flags)


@dataclass
class WhatIf:
    """One what-if image (model.explain.confounders) and what the classifier makes of it."""
    name: str
    image: np.ndarray                        # RGB uint8, the what-if as analysed
    classes: list[str]
    probabilities: np.ndarray                # calibrated
    cam: np.ndarray                          # the heatmap of `cam_method` at the image's size, [0, 1]
    cam_method: str
    cam_class: str
    cam_layer: str
    prediction_sets: dict[int, list[str]] = field(default_factory=dict)
    ms: float = 0.0                          # drawing + classifying + the heatmap

    @property
    def top_class(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]
