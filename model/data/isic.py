"""ISIC challenge formats and scoring, without a model (definitions: docs/isic-formats.md).

- Task 3 (classification) submission CSV: `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`, one row per image,
  probabilities in [0, 1]; the ground truth has the same form with one-hot rows (optionally a
  `score_weight` column). Scored the way the ISIC scorer does: balanced multiclass accuracy
  (the leaderboard figure), and per category accuracy, sensitivity, specificity, Dice, PPV, NPV
  (all at 0.5), AUC, partial AUC above 80% sensitivity and average precision, macro-averaged.
- Task 1 (segmentation): one `<image>_segmentation.png` per image, 0/255; scored by the mean over
  images of the Jaccard index set to 0 below 0.65 (thresholded Jaccard).

    python -m model.cli.evaluate isic --truth GT.csv --pred PRED.csv [--json OUT]
    python -m model.cli.evaluate isic --truth-masks DIR --pred-masks DIR [--json OUT]
    python -m model.cli.evaluate isic --write-truth DATA --truth GT.csv   (a labelled folder as Task 3 truth)
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from model.metrics import mask_scores

ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
HAM_TO_ISIC2018 = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AKIEC", "bkl": "BKL", "df": "DF", "vasc": "VASC"}
MASK_SUFFIX = "_segmentation.png"


class IsicFormatError(ValueError):
    """A CSV or mask folder that does not follow the ISIC form; the message says what is wrong."""


# ----------------------------------------------------------------------------- writing
def isic2018_order(classes: Sequence[str]) -> list[int]:
    """Index into a bundle's class order for each ISIC 2018 column (MEL, NV, ... VASC)."""
    codes = {HAM_TO_ISIC2018.get(c.lower(), c.upper()): i for i, c in enumerate(classes)}
    missing = [c for c in ISIC2018_COLUMNS if c not in codes]
    if missing:
        raise IsicFormatError(f"the model has no class for ISIC 2018 column(s) {', '.join(missing)} "
                              f"(its classes: {', '.join(classes)}); use --format csv")
    return [codes[c] for c in ISIC2018_COLUMNS]


def isic2018_row(image_id: str, probabilities: np.ndarray, order: Sequence[int]) -> list[str]:
    return [image_id, *(f"{float(probabilities[i]):.6f}" for i in order)]


def write_truth_csv(data: Path, out: Path) -> int:
    """ISIC 2018 Task 3 ground truth (one-hot rows) for a labelled dataset folder; returns the row count."""
    from model.data.dataset import load_dataset

    rows = [[r.image_id, *("1.0" if HAM_TO_ISIC2018.get(r.label) == c else "0.0" for c in ISIC2018_COLUMNS)]
            for r in load_dataset(data).records if r.label in HAM_TO_ISIC2018]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", *ISIC2018_COLUMNS])
        w.writerows(sorted(rows))
    return len(rows)


# ----------------------------------------------------------------------------- reading
def _image_id(name: str) -> str:
    return name[:-4] if name.lower().endswith(".jpg") else name


def read_task3_csv(path: Path, categories: Sequence[str] | None = None) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(image ids, categories, N x C values, N weights) of a Task 3 CSV. A truth file sets the
    categories (every column but image/score_weight/validation_weight); a prediction file must
    have exactly those (any order)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise IsicFormatError(f"{path}: cannot read ({e})") from None
    if not rows or "image" not in rows[0]:
        raise IsicFormatError(f"{path}: no 'image' column in the header")
    header = [h.strip() for h in rows[0]]
    weight_cols = {"score_weight", "validation_weight"}
    found = [h for h in header if h != "image" and h not in weight_cols]
    if categories is None:
        categories = found
    else:
        missing, extra = sorted(set(categories) - set(found)), sorted(set(found) - set(categories))
        if missing or extra:
            raise IsicFormatError(f"{path}: " + "; ".join(
                ([f"missing column(s) {missing}"] if missing else []) + ([f"extra column(s) {extra}"] if extra else [])))
    cols = [header.index(c) for c in categories]
    wcol = header.index("score_weight") if "score_weight" in header else None
    ids, values, weights = [], [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise IsicFormatError(f"{path} line {n}: {len(row)} fields, the header has {len(header)}")
        try:
            v = [float(row[c]) for c in cols]
            w = float(row[wcol]) if wcol is not None else 1.0
        except ValueError:
            raise IsicFormatError(f"{path} line {n}: a value is not a number") from None
        if not all(0.0 <= x <= 1.0 for x in v):
            raise IsicFormatError(f"{path} line {n}: values must lie in [0, 1]")
        ids.append(_image_id(row[header.index("image")].strip()))
        values.append(v)
        weights.append(w)
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise IsicFormatError(f"{path}: duplicate image rows {dupes[:5]}")
    return ids, list(categories), np.asarray(values, np.float64).reshape(-1, len(categories)), np.asarray(weights)


# ----------------------------------------------------------------------------- Task 3 metrics
def _labels(values: np.ndarray) -> np.ndarray:
    """Argmax per row; -1 ('undecided') where the maximum is shared."""
    top = values.argmax(1)
    tied = (values == values.max(1, keepdims=True)).sum(1) > 1
    return np.where(tied, -1, top)


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> float:
    """Mean over categories present in the truth of the (weighted) share of their images whose
    predicted top category is theirs; a tie for the top prediction counts as wrong."""
    t, p = _labels(truth), _labels(pred)
    recalls = []
    for c in range(truth.shape[1]):
        total = weights[t == c].sum()
        if total > 0:
            recalls.append(weights[(t == c) & (p == c)].sum() / total)
    return float(np.mean(recalls)) if recalls else math.nan


def roc_points(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC curve (fpr, tpr) from (0, 0), one point per distinct score, highest first."""
    order = np.argsort(-score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(w * yy)[last], np.cumsum(w * ~yy)[last]
    pos, neg = tp[-1] if len(tp) else 0.0, fp[-1] if len(fp) else 0.0
    if pos <= 0 or neg <= 0:
        return np.array([]), np.array([])
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def auc_from(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.trapezoid(tpr, fpr)) if len(fpr) else math.nan


def auc_above_sensitivity(fpr: np.ndarray, tpr: np.ndarray, sensitivity: float = 0.8) -> float:
    """Area under the ROC curve over the part where sensitivity >= `sensitivity` (not rescaled):
    1.0 for a perfect ranking, (1 - s**2) / 2 for a random one (0.18 at 0.8)."""
    if not len(fpr):
        return math.nan
    k = int(np.searchsorted(tpr, sensitivity, side="left"))
    f0 = float(np.interp(sensitivity, tpr[k - 1:k + 1], fpr[k - 1:k + 1])) if k > 0 else float(fpr[0])
    return auc_from(np.r_[f0, fpr[k:]], np.r_[sensitivity, tpr[k:]])


def sensitivity_at_specificity(fpr: np.ndarray, tpr: np.ndarray, specificity: float = 0.8) -> float:
    """Highest sensitivity of a threshold whose specificity is at least `specificity`."""
    if not len(fpr):
        return math.nan
    ok = fpr <= 1 - specificity + 1e-12
    return float(tpr[ok].max())


def average_precision(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> float:
    """Sum over thresholds (highest first) of precision x the recall gained at that threshold."""
    order = np.argsort(-score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(w * yy)[last], np.cumsum(w * ~yy)[last]
    if not len(tp) or tp[-1] <= 0:
        return math.nan
    recall = tp / tp[-1]
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 1.0  # the scorer's convention: an undefined ratio scores 1


def category_scores(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """One category, one-vs-rest; truth and prediction binarised at 0.5 for the count metrics."""
    yt, yp = y > 0.5, score > 0.5
    tp, tn = weights[yt & yp].sum(), weights[~yt & ~yp].sum()
    fp, fn = weights[~yt & yp].sum(), weights[yt & ~yp].sum()
    fpr, tpr = roc_points(yt, score, weights)
    return {"accuracy": _ratio(tp + tn, tp + tn + fp + fn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "dice": _ratio(2 * tp, 2 * tp + fp + fn),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "auc": auc_from(fpr, tpr),
            "auc_sens_80": auc_above_sensitivity(fpr, tpr, 0.8),
            "sensitivity_at_80_specificity": sensitivity_at_specificity(fpr, tpr, 0.8),
            "ap": average_precision(yt, score, weights)}


def score_task3(truth_csv: Path, pred_csv: Path) -> dict:
    t_ids, cats, truth, weights = read_task3_csv(truth_csv)
    p_ids, _, pred, _ = read_task3_csv(pred_csv, cats)
    missing, extra = sorted(set(t_ids) - set(p_ids)), sorted(set(p_ids) - set(t_ids))
    if missing or extra:
        raise IsicFormatError("; ".join(([f"{len(missing)} image(s) missing from the predictions, e.g. {missing[:5]}"]
                                         if missing else []) +
                                        ([f"{len(extra)} image(s) not in the truth, e.g. {extra[:5]}"] if extra else [])))
    row = {i: k for k, i in enumerate(p_ids)}
    pred = pred[[row[i] for i in t_ids]]
    per = {c: category_scores(truth[:, k], pred[:, k], weights) for k, c in enumerate(cats)}
    keys = list(next(iter(per.values())).keys()) if per else []
    macro = {k: float(np.nanmean([per[c][k] for c in cats])) if any(not math.isnan(per[c][k]) for c in cats)
             else math.nan for k in keys}
    return {"task": 3, "n": len(t_ids), "categories": cats,
            "balanced_accuracy": balanced_accuracy(truth, pred, weights),
            "per_category": per, "macro_average": macro}


# ----------------------------------------------------------------------------- Task 1 metrics
def _read_binary(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 128


def score_task1(truth_dir: Path, pred_dir: Path) -> dict:
    truths = {p.name[:-len(MASK_SUFFIX)]: p for p in sorted(Path(truth_dir).glob(f"*{MASK_SUFFIX}"))}
    if not truths:
        raise IsicFormatError(f"{truth_dir}: no *{MASK_SUFFIX} files")
    missing = [i for i in truths if not (Path(pred_dir) / f"{i}{MASK_SUFFIX}").is_file()]
    if missing:
        raise IsicFormatError(f"{len(missing)} mask(s) missing from {pred_dir}, e.g. {missing[:5]}")
    per_image = {}
    for image_id, tpath in truths.items():
        t, p = _read_binary(tpath), _read_binary(Path(pred_dir) / f"{image_id}{MASK_SUFFIX}")
        if t.shape != p.shape:
            raise IsicFormatError(f"{image_id}: predicted mask is {p.shape[1]}x{p.shape[0]}, the truth "
                                  f"{t.shape[1]}x{t.shape[0]} (masks must have the image's own size)")
        per_image[image_id] = mask_scores(p, t)
    keys = list(next(iter(per_image.values())).keys())
    return {"task": 1, "n": len(per_image), "threshold_jaccard": float(np.mean([s["threshold_jaccard"]
                                                                                for s in per_image.values()])),
            "macro_average": {k: float(np.mean([s[k] for s in per_image.values()])) for k in keys},
            "per_image": per_image}


# ----------------------------------------------------------------------------- CLI
def summary_lines(report: dict) -> list[str]:
    if report["task"] == 1:
        return [f"ISIC Task 1, {report['n']} images"] + [f"{k:>24}: {v:.4f}" for k, v in report["macro_average"].items()]
    cats, per = report["categories"], report["per_category"]
    keys = list(report["macro_average"])
    lines = [f"ISIC Task 3, {report['n']} images: balanced accuracy {report['balanced_accuracy']:.4f}", "",
             f"{'':>30}" + "".join(f"{c:>8}" for c in cats) + f"{'macro':>8}"]
    for k in keys:
        lines.append(f"{k:>30}" + "".join(f"{per[c][k]:8.4f}" for c in cats) + f"{report['macro_average'][k]:8.4f}")
    return lines
