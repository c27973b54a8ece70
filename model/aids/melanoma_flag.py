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


def raise_for_other_devices(cfg: dict, p_mel: np.ndarray, is_mel: np.ndarray, min_specificity: float,
                            where: str) -> dict:
    """`cfg` (chosen on validation) with its threshold raised, if need be, to the lowest one whose
    specificity on another clinic's images (`p_mel`, `is_mel`: e.g. Derm7pt's select part) is at least
    `min_specificity`: a flag that fires on most benign lesions from another dermatoscope tells a
    clinician little. The threshold never goes down; the validation rates are restated at the new one
    and the other clinic's rates are recorded beside them."""
    p_mel, is_mel = np.asarray(p_mel, float), np.asarray(is_mel, bool)
    negatives = np.sort(p_mel[~is_mel])
    if len(negatives) == 0 or not is_mel.any():
        raise ValueError(f"{where} needs melanomas and other lesions to set the flag's specificity.")
    k = max(1, math.ceil(min_specificity * len(negatives) - 1e-9))   # leave at least k of them unflagged
    floor = float(np.nextafter(negatives[k - 1], np.inf))             # flagged: p >= threshold
    out = dict(cfg)
    out["validation_threshold"] = cfg["threshold"]
    if floor > cfg["threshold"]:
        out["threshold"] = floor
    sens, spec = flag_rates(p_mel, is_mel, out["threshold"])
    sens_v, spec_v = flag_rates(p_mel, is_mel, cfg["threshold"])
    out.update(external={"where": where, "min_specificity": min_specificity, "sensitivity": round(sens, 4),
                         "specificity": round(spec, 4), "melanomas": int(is_mel.sum()), "others": int((~is_mel).sum()),
                         "at_validation_threshold": {"sensitivity": round(sens_v, 4), "specificity": round(spec_v, 4)}},
               chosen_on=(f"validation split for {cfg['target_sensitivity']:.0%} sensitivity, raised to keep "
                          f"specificity at least {min_specificity:.0%} on {where}"
                          if floor > cfg["threshold"] else cfg["chosen_on"]))
    return out


def restate_validation(cfg: dict, p_val: np.ndarray, mel_val: np.ndarray) -> dict:
    """The validation rates of `cfg` at its (possibly raised) threshold."""
    sens, spec = flag_rates(p_val, mel_val, cfg["threshold"])
    return {**cfg, "val_sensitivity": round(sens, 4), "val_specificity": round(spec, 4)}


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
