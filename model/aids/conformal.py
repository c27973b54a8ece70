"""Conformal prediction sets: the diagnoses that contain the true one with a stated probability.

Class-conditional (Mondrian) split conformal prediction. Scores: LAC, 1 - p_k (Sadinle, Lei &
Wasserman 2019); APS, the total calibrated probability of the classes ranked at or above k (Romano
et al. 2020); RAPS, APS plus 0.01 per rank beyond the first (Angelopoulos et al. 2021). On the
validation split, the threshold q_k(alpha) is the ceil((n_k + 1)(1 - alpha))-th smallest score
among the n_k validation images of class k (infinite when that exceeds n_k: class k is then always
in the set). The set of a new image is {k : score(k) <= q_k}. On exchangeable data, an image of
class k gets a set holding k with probability at least 1 - alpha, for every class on its own.

With `always_top` (the default) the top class joins every set. That keeps the guarantee (a set
only grows) and mends what a clinician cannot read: with APS/RAPS a very confident image scores its
own top class at about its probability, above that class's threshold, so the set left out a top
class at p = 0.99, and some sets were empty. Which score, and whether to add the top class, was
chosen on the validation split (`choose`, docs/similar-and-conformal.md).

Thresholds for 80-99% coverage are stored in meta.json (`conformal`), like the temperature; this
module is plain numpy so the app's pages may import it.

    python -m model.cli.conformal BUNDLE --data DIR [--score raps|aps]   # calibrate on val, measure on test
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from model.labels import display_name, is_malignant

COVERAGES = tuple(range(80, 100))     # percent; the sidebar's slider offers exactly these
DEFAULT_COVERAGE = 90
UNCERTAIN_SIZE = 3                    # a set this large or larger is called uncertain
RAPS_LAMBDA, RAPS_KREG = 0.01, 1      # RAPS penalty per rank beyond k_reg (only with score="raps")
DEFAULT_SCORE = "lac"                 # chosen on the validation split (docs/similar-and-conformal.md)
# Classes calibrated stricter than the set's stated coverage, in points (capped at MAX_LEVEL): a missed
# melanoma costs most, so at 90% melanoma's own threshold is set for 95% (docs/real-uploads.md, sets).
STRICTER = {"mel": 5}
MAX_LEVEL = 99
SCORES = ("lac", "aps", "raps")


def conformity_scores(probs: np.ndarray, score: str = "aps", lam: float = RAPS_LAMBDA,
                      k_reg: int = RAPS_KREG) -> np.ndarray:
    """(N, K) non-conformity of every class for every image: LAC = 1 - p; APS = probability mass of
    the classes ranked at or above it (ties counted together); RAPS adds lam * max(0, rank - k_reg)."""
    p = np.atleast_2d(np.asarray(probs, np.float64))
    if score == "lac":
        return 1.0 - p
    order = np.argsort(-p, axis=1, kind="stable")
    sorted_p = np.take_along_axis(p, order, 1)
    cum = np.cumsum(sorted_p, 1)
    # ties: every class with the same probability gets the cumulative mass of the last of them
    for j in range(p.shape[1] - 2, -1, -1):
        tie = sorted_p[:, j] == sorted_p[:, j + 1]
        cum[tie, j] = cum[tie, j + 1]
    s = np.empty_like(cum)
    np.put_along_axis(s, order, cum, 1)
    if score == "raps":
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, p.shape[1] + 1)[None].repeat(len(p), 0), 1)
        s = s + lam * np.maximum(0, ranks - k_reg)
    elif score != "aps":
        raise ValueError(f"unknown conformity score {score!r} ({', '.join(SCORES)})")
    return s


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The finite-sample-corrected (1 - alpha) quantile of calibration scores; inf if too few."""
    scores = np.sort(np.asarray(scores, np.float64))
    rank = math.ceil((len(scores) + 1) * (1 - alpha) - 1e-9)
    return float(scores[rank - 1]) if 1 <= rank <= len(scores) else math.inf


def class_level(coverage: int, cls: str, stricter: dict[str, int] | None = None) -> int:
    """The coverage (percent) class `cls` is calibrated for when a set states `coverage`."""
    extra = (STRICTER if stricter is None else stricter).get(cls, 0)
    return max(coverage, min(coverage + extra, MAX_LEVEL)) if extra else coverage


def calibrate(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], score: str = DEFAULT_SCORE,
              coverages: Sequence[int] = COVERAGES, mondrian: bool = True, lam: float = RAPS_LAMBDA,
              k_reg: int = RAPS_KREG, always_top: bool = True, stricter: dict[str, int] | None = None) -> dict:
    """The `conformal` entry of meta.json from calibrated probabilities of labelled images
    (the validation split): thresholds per coverage (percent) and class; null = always included.
    A class in `stricter` (default STRICTER; with mondrian only) gets its threshold for that many
    points more coverage."""
    labels = np.asarray(labels)
    stricter = dict(STRICTER if stricter is None else stricter) if mondrian else {}
    s = conformity_scores(probs, score, lam, k_reg)
    true_s = s[np.arange(len(labels)), labels]
    thresholds = {}
    for cov in coverages:
        pooled = conformal_quantile(true_s, 1 - cov / 100)
        q = {c: conformal_quantile(true_s[labels == k], 1 - class_level(cov, c, stricter) / 100) if mondrian else pooled
             for k, c in enumerate(classes)}
        thresholds[str(cov)] = {c: (None if math.isinf(v) else v) for c, v in q.items()}
    return {"method": "mondrian split conformal" if mondrian else "split conformal", "score": score,
            **({"raps_lambda": lam, "raps_k_reg": k_reg} if score == "raps" else {}), "always_top": always_top,
            "stricter": {c: v for c, v in stricter.items() if c in classes},
            "calibrated_on": "validation split, calibrated probabilities (after temperature)",
            "n_per_class": {c: int((labels == k).sum()) for k, c in enumerate(classes)},
            "default_coverage": DEFAULT_COVERAGE, "thresholds": thresholds}


def conformal_config(meta: dict) -> dict | None:
    """The bundle's conformal settings when they are usable with its classes, else None."""
    cfg = meta.get("conformal")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("thresholds"), dict) or not cfg["thresholds"]:
        return None
    classes = set(meta.get("classes", []))
    if any(not isinstance(t, dict) or set(t) != classes for t in cfg["thresholds"].values()):
        return None
    return cfg


def coverages_of(cfg: dict) -> list[int]:
    return sorted(int(c) for c in cfg["thresholds"])


def _thresholds(cfg: dict, classes: Sequence[str], coverage: int) -> np.ndarray:
    t = cfg["thresholds"].get(str(int(coverage)))
    if t is None:
        raise ValueError(f"no conformal thresholds for {coverage}% (have {coverages_of(cfg)})")
    return np.array([math.inf if t[c] is None else float(t[c]) for c in classes])


def _scores(probs: np.ndarray, cfg: dict) -> np.ndarray:
    return conformity_scores(probs, cfg.get("score", "aps"), cfg.get("raps_lambda", RAPS_LAMBDA),
                             cfg.get("raps_k_reg", RAPS_KREG))


def _with_top(inside: np.ndarray, p: np.ndarray, cfg: dict) -> np.ndarray:
    """Add each image's top class to its set when the configuration says so (`inside`: (N, ..., K))."""
    if cfg.get("always_top"):
        inside[np.arange(len(p)), ..., p.argmax(1)] = True
    return inside


def set_masks(probs: np.ndarray, cfg: dict, classes: Sequence[str], coverage: int) -> np.ndarray:
    """(N, K) bool: class k is in image n's set at `coverage` percent."""
    p = np.atleast_2d(np.asarray(probs, np.float64))
    return _with_top(_scores(p, cfg) <= _thresholds(cfg, classes, coverage)[None] + 1e-12, p, cfg)


def threshold_table(cfg: dict, classes: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """(coverages, (n_coverages, K) thresholds): every coverage's per-class thresholds at once."""
    covs = coverages_of(cfg)
    return covs, np.array([_thresholds(cfg, classes, c) for c in covs]).reshape(len(covs), len(classes))


def sets_many(probs: np.ndarray, cfg: dict, classes: Sequence[str],
              table: tuple[list[int], np.ndarray] | None = None) -> list[dict[int, list[str]]]:
    """all_sets for each row of (N, K) probabilities, scored in one pass (`table`: threshold_table,
    reused across calls)."""
    p = np.atleast_2d(np.asarray(probs, np.float64))
    covs, thr = table or threshold_table(cfg, classes)
    order = np.argsort(-p, axis=1, kind="stable")
    inside = _with_top(_scores(p, cfg)[:, None, :] <= thr[None] + 1e-12, p, cfg)  # (N, coverages, K)
    inside = np.take_along_axis(inside, order[:, None, :], 2)            # classes most probable first
    return [{cov: [classes[i] for i, keep in zip(o, row) if keep] for cov, row in zip(covs, rows.tolist())}
            for o, rows in zip(order.tolist(), inside)]


def all_sets(probs: np.ndarray, cfg: dict, classes: Sequence[str]) -> dict[int, list[str]]:
    """For one image: coverage percent -> its set (class codes, most probable first)."""
    return sets_many(np.asarray(probs)[None], cfg, classes)[0]


def raised_levels(coverage: int, stricter: dict[str, int] | None) -> dict[str, int]:
    """The classes of `stricter` calibrated above a stated `coverage`, with their own level (none at 99%)."""
    return {c: class_level(coverage, c, stricter) for c in (stricter or {})
            if class_level(coverage, c, stricter) > coverage}


def coverage_phrase(coverage: int, stricter: dict[str, int] | None) -> str:
    """How often a set holds the true diagnosis, in words: '90% of the time for each class on its own
    (melanoma: 95%)'."""
    extra = [f"{display_name(c).lower()}: {level}%" for c, level in raised_levels(coverage, stricter).items()]
    return f"{coverage}% of the time for each class on its own" + (f" ({', '.join(extra)})" if extra else "")


def set_notes(codes: Sequence[str], top_class: str, coverage: int) -> list[str]:
    """Plain-language reading of a prediction set."""
    notes = []
    if not codes:
        return [f"No diagnosis reaches {coverage}% confidence: the image is unlike the validation images of "
                "every class. Treat the probabilities with caution."]
    malignant = sorted((c for c in codes if is_malignant(c)), key=lambda c: c != "mel")  # melanoma first
    if malignant and not is_malignant(top_class):
        rest = f" (nor {', '.join(display_name(c).lower() for c in malignant[1:])})" if len(malignant) > 1 else ""
        notes.append(f"{display_name(malignant[0])} cannot be ruled out at {coverage}%{rest}, although the top "
                     f"class ({display_name(top_class).lower()}) is benign.")
    if len(codes) >= UNCERTAIN_SIZE:
        notes.append(f"Uncertain: {len(codes)} diagnoses remain possible at {coverage}%.")
    elif len(codes) == 1:
        notes.append(f"A single diagnosis at {coverage}%.")
    return notes


def evaluate_sets(probs: np.ndarray, labels: np.ndarray, cfg: dict, classes: Sequence[str],
                  coverage: int = DEFAULT_COVERAGE) -> dict:
    """Coverage overall and per class, mean set size, share of single-class (and empty) sets."""
    labels = np.asarray(labels)
    m = set_masks(probs, cfg, classes, coverage)
    hit = m[np.arange(len(labels)), labels]
    sizes = m.sum(1)
    p = np.atleast_2d(np.asarray(probs, np.float64))
    top = p.argmax(1)
    dropped = (~m[np.arange(len(labels)), top]) & (p.max(1) >= 0.5)
    return {"coverage_target": coverage / 100, "n": int(len(labels)), "coverage": float(hit.mean()),
            "per_class": {c: {"coverage": float(hit[labels == k].mean()) if (labels == k).any() else None,
                              "mean_set_size": float(sizes[labels == k].mean()) if (labels == k).any() else None,
                              "n": int((labels == k).sum())} for k, c in enumerate(classes)},
            "mean_set_size": float(sizes.mean()), "singleton_share": float((sizes == 1).mean()),
            "empty_share": float((sizes == 0).mean()), "empty": int((sizes == 0).sum()),
            "top_dropped_share": float(dropped.mean()), "top_dropped": int(dropped.sum())}


def halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two stratified halves of the images (index arrays), each class split as evenly as it can be."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        a.append(idx[: len(idx) // 2])
        b.append(idx[len(idx) // 2:])
    return np.concatenate(a), np.concatenate(b)


def choose(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], coverage: int = DEFAULT_COVERAGE,
           seed: int = 0) -> tuple[dict, list[dict]]:
    """Each score, with and without the top class added, calibrated on one stratified half of the
    (validation) images and measured on the other, both ways: ({score, always_top} chosen, rows).

    The rule, fixed before it was run: only settings that add the top class (the others can leave
    out a top class at p >= 0.5 or give an empty set); among them the smallest mean set size whose
    coverage is at least the target overall; ties go to the larger share of single-class sets."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    a, b = halves(labels, seed)
    rows = []
    for score in SCORES:
        for top in (False, True):
            folds = [evaluate_sets(probs[te], labels[te], calibrate(probs[tr], labels[tr], classes, score,
                                                                     (coverage,), always_top=top), classes, coverage)
                     for tr, te in ((a, b), (b, a))]
            row = {"score": score, "always_top": top}
            for key in ("coverage", "mean_set_size", "singleton_share", "empty_share", "top_dropped_share"):
                row[key] = float(np.mean([f[key] for f in folds]))
            row["per_class_coverage"] = {c: float(np.mean([f["per_class"][c]["coverage"] for f in folds
                                                           if f["per_class"][c]["coverage"] is not None] or [np.nan]))
                                         for c in classes}
            rows.append(row)
    ok = [r for r in rows if r["always_top"] and r["coverage"] >= coverage / 100]
    best = min(ok or [r for r in rows if r["always_top"]], key=lambda r: (r["mean_set_size"], -r["singleton_share"]))
    return {"score": best["score"], "always_top": best["always_top"]}, rows


CHOICE_RULE = ("adds the top class; the smallest mean set size at >= 90% coverage on the other half of the "
               "validation split (2 stratified folds)")


def calibrate_chosen(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], score: str | None = None,
                     always_top: bool = True) -> dict:
    """`calibrate` with the score `choose` picks on these (validation) images, unless one is given;
    the rows it compared are kept in the config (`chosen_by`)."""
    if score is not None:
        return calibrate(probs, labels, classes, score, always_top=always_top)
    chosen, rows = choose(probs, labels, classes)
    cfg = calibrate(probs, labels, classes, chosen["score"], always_top=chosen["always_top"])
    cfg["chosen_by"] = {"rule": CHOICE_RULE, "rows": rows}
    return cfg


def calibrate_and_measure(bundle_dir: Path, val: tuple[np.ndarray, np.ndarray], test: tuple | None,
                          classes: Sequence[str], score: str | None = None, always_top: bool = True) -> dict:
    """calibrate_chosen on (val probs, labels), measured on test at every stored coverage; written to meta.json."""
    from model.nets.bundle import update_meta

    cfg = calibrate_chosen(*val, classes, score, always_top)
    if test is not None:
        cfg["test"] = {str(c): evaluate_sets(*test, cfg, classes, c) for c in (80, 90, 95, 99)}
    update_meta(bundle_dir, conformal=cfg)
    return cfg
