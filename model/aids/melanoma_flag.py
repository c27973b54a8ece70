"""The melanoma flag: calibrated P(mel) at or over a threshold chosen on validation images for a
target sensitivity (0.90 by default). Stored in meta.json as `melanoma_flag`; the app, predict and
evaluate read it from there. A screening aid: it trades specificity for sensitivity on purpose.

    python -m model.cli.melanoma_flag BUNDLE --data DIR     # (re)choose it for an existing bundle
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TARGET_SENSITIVITY = 0.90
FLAG_CLASS = "mel"


def flag_rates(p_mel: np.ndarray, is_mel: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of `p_mel >= threshold` against the truth; NaN where undefined."""
    p_mel, is_mel = np.asarray(p_mel, float), np.asarray(is_mel, bool)
    flagged = p_mel >= threshold
    sens = float(flagged[is_mel].mean()) if is_mel.any() else math.nan
    spec = float((~flagged[~is_mel]).mean()) if (~is_mel).any() else math.nan
    return sens, spec


def choose_threshold(p_mel: np.ndarray, is_mel: np.ndarray, target: float = TARGET_SENSITIVITY) -> dict:
    """The highest threshold whose sensitivity on these images is at least `target`
    (so specificity is as high as that allows). Needs at least one melanoma."""
    p_mel, is_mel = np.asarray(p_mel, float), np.asarray(is_mel, bool)
    positives = np.sort(p_mel[is_mel])[::-1]
    if len(positives) == 0:
        raise ValueError("No melanoma among the images: the flag's threshold cannot be chosen.")
    k = max(1, math.ceil(target * len(positives) - 1e-9))  # flag at least k of the melanomas
    threshold = float(positives[k - 1])
    sens, spec = flag_rates(p_mel, is_mel, threshold)
    return {"class": FLAG_CLASS, "threshold": threshold, "target_sensitivity": target,  # unrounded: rounding up would unflag a melanoma
            "val_sensitivity": round(sens, 4), "val_specificity": round(spec, 4), "val_melanomas": int(is_mel.sum()),
            "chosen_on": "validation split, calibrated probabilities"}


def flag_config(meta: dict) -> dict | None:
    """The bundle's flag settings, if it has them and knows the flag's class."""
    cfg = meta.get("melanoma_flag")
    if not isinstance(cfg, dict) or cfg.get("class") not in meta.get("classes", []):
        return None
    if not isinstance(cfg.get("threshold"), (int, float)):
        return None
    return cfg


def is_flagged(meta: dict, classes: Sequence[str], probs: np.ndarray) -> bool | None:
    """The flag for one probability vector (None when the bundle has no flag)."""
    cfg = flag_config(meta)
    if cfg is None:
        return None
    return bool(float(probs[list(classes).index(cfg["class"])]) >= float(cfg["threshold"]))
