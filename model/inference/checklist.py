"""The 7-point checklist for the Analyzer and batch review: the bundle's concept probes
(model.explain.concepts) read on an image's pooled features, and their maps on the head's last map.

Built once per Analyzer; a bundle without probes, or with probes fitted on other weights, gives no
checklist and an `error` that says which command to run."""
from __future__ import annotations

import numpy as np
import torch

from model.data.checklist import (BY_NAME, NAMES, PRESENT_AT, RELIABLE_AUROC, WEIGHTS, seven_point_score,
                                  suggests_melanoma)
from model.explain.concepts import ConceptError, ConceptProbes, load_probes
from model.inference.results import ChecklistReading
from model.nets.bundle import Bundle


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float32)))


class Checklist:
    """The probes of one classifier bundle and their measured AUROCs (meta.json interpretability.concepts)."""

    def __init__(self, probes: ConceptProbes | None, measured: dict, error: str | None = None):
        self.probes, self.error = probes, error
        self.measured = measured.get("criteria", {}) if isinstance(measured, dict) else {}

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "Checklist":
        measured = (bundle.meta.get("interpretability") or {}).get("concepts") or {}
        try:
            return cls(load_probes(bundle.path), measured)
        except ConceptError as e:
            return cls(None, measured, str(e))

    @property
    def available(self) -> bool:
        return self.probes is not None

    def scores_many(self, features: np.ndarray) -> tuple[list[dict | None], list[int | None]]:
        """(criterion -> presence, 7-point score) per row of pooled features; Nones without probes."""
        if self.probes is None:
            return [None] * len(features), [None] * len(features)
        p = self.probes.presence(features)
        dicts = [{n: round(float(v), 5) for n, v in zip(NAMES, row)} for row in p]
        return dicts, [seven_point_score(dict(zip(NAMES, row >= PRESENT_AT))) for row in p]

    def reading(self, features: np.ndarray, head_map: np.ndarray | None) -> ChecklistReading | None:
        """One image: presence from its pooled features (D,), maps from the head's last map (D, h, w), at
        that map's resolution (a view resizes them bilinearly, as it does a CAM)."""
        if self.probes is None:
            return None
        presence = self.probes.presence(np.asarray(features)[None])[0]
        present = [bool(v >= PRESENT_AT) for v in presence]
        score = seven_point_score(dict(zip(NAMES, present)))
        maps = None   # a head this code cannot follow to a map of the pooled features' own channels: no maps
        if head_map is not None and head_map.ndim == 3 and head_map.shape[0] == self.probes.weight.shape[1]:
            maps = sigmoid(self.probes.maps(head_map)).astype(np.float32)   # drawn resized (bilinear) over the image
        auroc = [self.measured.get(n, {}).get("auroc") for n in NAMES]
        return ChecklistReading(
            names=list(NAMES), labels=[BY_NAME[n].label for n in NAMES], weights=[WEIGHTS[n] for n in NAMES],
            presence=presence.astype(np.float32), present=present, auroc=auroc,
            auroc_ci=[self.measured.get(n, {}).get("auroc_ci") for n in NAMES],
            reliable=[a is not None and a >= RELIABLE_AUROC for a in auroc], score=score,
            suggests_melanoma=suggests_melanoma(score), maps=maps)


def head_map(tail, stage_map: np.ndarray, device: torch.device) -> np.ndarray:
    """The head's last map (D, h, w) from the last stage's (C, h, w), through `tail` (LastStageCam.tail)."""
    with torch.inference_mode():
        return tail(torch.as_tensor(stage_map, dtype=torch.float32, device=device)[None])[0].float().cpu().numpy()
