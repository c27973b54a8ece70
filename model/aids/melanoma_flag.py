"""The melanoma flag: calibrated P(mel) at or over a threshold chosen on validation images for a
target sensitivity (0.90 by default). Stored in meta.json as `melanoma_flag`; the app, predict and
evaluate read it from there. A screening aid: it trades specificity for sensitivity on purpose.

    python -m model.aids.melanoma_flag BUNDLE --data DIR     # (re)choose it for an existing bundle
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.aids.melanoma_flag", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle folder (with split.json)")
    ap.add_argument("--data", type=Path, required=True, help="the dataset the bundle was trained on")
    ap.add_argument("--target", type=float, default=TARGET_SENSITIVITY, help="sensitivity to reach on validation")
    args = ap.parse_args(argv)
    from model.nets.bundle import BundleError, load_bundle, update_meta
    from model.data.dataset import DatasetError
    from model.evaluation.evaluate import classifier_split_logits, records_for_split
    from model.nets.forward import calibrated_probs

    try:
        bundle = load_bundle(args.bundle)
        if FLAG_CLASS not in bundle.classes:
            raise BundleError(f"The bundle has no {FLAG_CLASS!r} class.")
        z, y, _ = classifier_split_logits(bundle, records_for_split(args.bundle, args.data, "val"),
                                          progress=sys.stderr.isatty())
        cfg = choose_threshold(calibrated_probs(bundle, z)[:, bundle.classes.index(FLAG_CLASS)],
                               y == bundle.classes.index(FLAG_CLASS), args.target)
    except (BundleError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    update_meta(args.bundle, melanoma_flag=cfg)
    print(f"melanoma flag: P(mel) >= {cfg['threshold']:.4f} (validation sensitivity {cfg['val_sensitivity']:.3f}, "
          f"specificity {cfg['val_specificity']:.3f}); written to {args.bundle / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
