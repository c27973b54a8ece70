"""Conformal prediction sets: the diagnoses that contain the true one with a stated probability.

Class-conditional (Mondrian) split conformal prediction with RAPS scores (Angelopoulos et al.
2021; APS, Romano et al. 2020, with `--score aps`): for each class k, the APS score of an image is
the total calibrated probability of the classes ranked at or above k; RAPS adds 0.01 per rank
beyond the first, which keeps unlikely classes out of the sets. On the validation split, the
threshold q_k(alpha) is the ceil((n_k + 1)(1 - alpha))-th smallest score among the n_k validation
images of class k (infinite when that exceeds n_k: class k is then always in the set). The set of
a new image is {k : score(k) <= q_k}. On exchangeable data, an image of class k gets a set holding
k with probability at least 1 - alpha and (for untied scores) at most 1 - alpha + 1/(n_k + 1),
for every class on its own, not only on average.

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
DEFAULT_SCORE = "raps"                # chosen on the validation split (docs/similar-and-conformal.md)


def conformity_scores(probs: np.ndarray, score: str = "aps", lam: float = RAPS_LAMBDA,
                      k_reg: int = RAPS_KREG) -> np.ndarray:
    """(N, K) non-conformity of every class for every image: APS = probability mass of the classes
    ranked at or above it (ties counted together); RAPS adds lam * max(0, rank - k_reg)."""
    p = np.atleast_2d(np.asarray(probs, np.float64))
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
        raise ValueError(f"unknown conformity score {score!r} (aps or raps)")
    return s


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The finite-sample-corrected (1 - alpha) quantile of calibration scores; inf if too few."""
    scores = np.sort(np.asarray(scores, np.float64))
    rank = math.ceil((len(scores) + 1) * (1 - alpha) - 1e-9)
    return float(scores[rank - 1]) if 1 <= rank <= len(scores) else math.inf


def calibrate(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], score: str = DEFAULT_SCORE,
              coverages: Sequence[int] = COVERAGES, mondrian: bool = True, lam: float = RAPS_LAMBDA,
              k_reg: int = RAPS_KREG) -> dict:
    """The `conformal` entry of meta.json from calibrated probabilities of labelled images
    (the validation split): thresholds per coverage (percent) and class; null = always included."""
    labels = np.asarray(labels)
    s = conformity_scores(probs, score, lam, k_reg)
    true_s = s[np.arange(len(labels)), labels]
    thresholds = {}
    for cov in coverages:
        alpha = 1 - cov / 100
        pooled = conformal_quantile(true_s, alpha)
        q = {c: conformal_quantile(true_s[labels == k], alpha) if mondrian else pooled for k, c in enumerate(classes)}
        thresholds[str(cov)] = {c: (None if math.isinf(v) else v) for c, v in q.items()}
    return {"method": "mondrian split conformal" if mondrian else "split conformal", "score": score,
            **({"raps_lambda": lam, "raps_k_reg": k_reg} if score == "raps" else {}),
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


def set_masks(probs: np.ndarray, cfg: dict, classes: Sequence[str], coverage: int) -> np.ndarray:
    """(N, K) bool: class k is in image n's set at `coverage` percent."""
    return _scores(probs, cfg) <= _thresholds(cfg, classes, coverage)[None] + 1e-12


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
    inside = _scores(p, cfg)[:, None, :] <= thr[None] + 1e-12          # (N, coverages, K)
    inside = np.take_along_axis(inside, order[:, None, :], 2)            # classes most probable first
    return [{cov: [classes[i] for i, keep in zip(o, row) if keep] for cov, row in zip(covs, rows.tolist())}
            for o, rows in zip(order.tolist(), inside)]


def all_sets(probs: np.ndarray, cfg: dict, classes: Sequence[str]) -> dict[int, list[str]]:
    """For one image: coverage percent -> its set (class codes, most probable first)."""
    return sets_many(np.asarray(probs)[None], cfg, classes)[0]


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
    return {"coverage_target": coverage / 100, "n": int(len(labels)), "coverage": float(hit.mean()),
            "per_class": {c: {"coverage": float(hit[labels == k].mean()) if (labels == k).any() else None,
                              "mean_set_size": float(sizes[labels == k].mean()) if (labels == k).any() else None,
                              "n": int((labels == k).sum())} for k, c in enumerate(classes)},
            "mean_set_size": float(sizes.mean()), "singleton_share": float((sizes == 1).mean()),
            "empty_share": float((sizes == 0).mean())}


def calibrate_and_measure(bundle_dir: Path, val: tuple[np.ndarray, np.ndarray], test: tuple | None,
                          classes: Sequence[str], score: str = DEFAULT_SCORE) -> dict:
    """Calibrate on (val probs, labels), measure on test at every stored coverage, write meta.json."""
    from model.nets.bundle import update_meta

    cfg = calibrate(*val, classes, score)
    if test is not None:
        cfg["test"] = {str(c): evaluate_sets(*test, cfg, classes, c) for c in (80, 90, 95, 99)}
    update_meta(bundle_dir, conformal=cfg)
    return cfg
