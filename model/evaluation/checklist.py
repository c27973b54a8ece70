"""The 7-point checklist learned from a classifier's features: fit the concept probes on Derm7pt's
`select` images, measure them on its `report` images, and store both in the bundle.

    python -m model.cli.concepts BUNDLE --data ../shared/data/derm7pt

Measured on `report` (nothing is fitted or chosen there): each probe's AUROC with a bootstrap 95% CI;
TCAV for the melanoma class (model.explain.tcav); the probes' 7-point score's melanoma sensitivity
and specificity beside the classifier's (top class, melanoma flag) and the dermatologists' own score;
and the agreement between the probes' score and the dermatologists' on the same images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from model.aids.melanoma_flag import FLAG_CLASS, flag_config, flag_rates
from model.data.checklist import NAMES, PRESENT_AT, SCORE_THRESHOLD, WEIGHTS, readings
from model.data.dataset import DatasetError, Record, decode_many, load_dataset, records_for_split
from model.explain.cam_forward import LastStageCam
from model.explain.concepts import ConceptProbes, fit_probes, save_probes
from model.explain.tcav import summed_head_gradients, tcav_table
from model.nets.bundle import Bundle, load_bundle, read_meta, update_meta
from model.nets.classifier import feature_layers
from model.nets.forward import calibrated_probs, classifier_outputs
from model.nets.weights_hash import weights_sha256

N_BOOT = 1000


@dataclass
class Part:
    """One Derm7pt part through the classifier: readings (N, 7) in NAMES order, and the engine's outputs."""
    records: list[Record]
    present: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    stage: np.ndarray              # (N, C, h, w) last-stage maps


def read_part(bundle: Bundle, data, split: str, batch_size: int = 32,
              progress: Callable[[str, int, int], None] | None = None) -> Part:
    """A part's records with all 7 criteria scored, decoded and run through the one input path."""
    recs = [r for r in records_for_split(bundle.path, data, split) if readings(r.criteria) is not None]
    if not recs:
        raise DatasetError(f"No {split} images with the 7 criteria scored in {getattr(data, 'root', data)}: "
                           "point --data at Derm7pt (metadata.csv with part and the criteria columns).")
    stage = f"stage{len(feature_layers(bundle.model)) - 1}"
    kept, chunks = [], []
    for i in range(0, len(recs), batch_size):
        decoded = [(r, img) for r, img, _, err in decode_many(recs[i:i + batch_size]) if err is None]
        kept += [r for r, _ in decoded]
        chunks.append(classifier_outputs(bundle, [img for _, img in decoded], ["logits", "features", stage]))
        if progress:
            progress(split, min(i + batch_size, len(recs)), len(recs))
    cat = {k: np.concatenate([c[k] for c in chunks if len(c[k])]) for k in ("logits", "features", stage)}
    present = np.array([[readings(r.criteria)[n] for n in NAMES] for r in kept], bool)
    return Part(kept, present, cat["logits"], cat["features"], cat[stage])


def fast_auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(y: np.ndarray, s: np.ndarray, n_boot: int = N_BOOT,
             seed: int = 0) -> tuple[float | None, list[float] | None]:
    """AUROC and its percentile bootstrap 95% interval (resampling images); (None, None) when the images
    hold only one side (no AUROC is defined)."""
    auc = fast_auc(y, s)
    if not np.isfinite(auc):
        return None, None
    rng = np.random.default_rng(seed)
    boots = [fast_auc(y[i], s[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    boots = np.asarray([b for b in boots if np.isfinite(b)])
    return round(auc, 4), [round(float(np.percentile(boots, 2.5)), 4), round(float(np.percentile(boots, 97.5)), 4)]


def criteria_report(probes: ConceptProbes, report: Part) -> dict:
    """Each criterion on `report`: {auroc, auroc_ci, n_test, positives, weight}."""
    p = probes.presence(report.features)
    out = {}
    for j, name in enumerate(NAMES):
        auc, ci = auroc_ci(report.present[:, j], p[:, j], seed=j)
        out[name] = {"auroc": auc, "auroc_ci": ci, "n_test": int(len(report.present)),
                     "positives": int(report.present[:, j].sum()), "weight": WEIGHTS[name]}
    return out


def rates(flagged: np.ndarray, is_mel: np.ndarray) -> dict:
    sens, spec = flag_rates(flagged.astype(float), is_mel, 0.5)
    return {"sensitivity": round(sens, 4), "specificity": round(spec, 4)}


def finite(v) -> float | None:
    """v rounded, or None where it is not defined (JSON has no NaN)."""
    return round(float(v), 4) if np.isfinite(v) else None


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two boolean ratings."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    po = float(np.mean(a == b))
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return round((po - pe) / (1 - pe), 4) if pe < 1 else float("nan")


def checklist_vs_classifier(bundle: Bundle, probes: ConceptProbes, report: Part) -> dict:
    """Melanoma sensitivity/specificity on `report` of the probes' score, the classifier (top class,
    flag) and the dermatologists' score; and the agreement of the two scores."""
    from scipy.stats import spearmanr

    classes = bundle.classes
    keep = np.array([r.label in classes for r in report.records])
    is_mel = np.array([r.label == FLAG_CLASS for r in report.records])[keep]
    w = np.array([WEIGHTS[n] for n in NAMES])
    probe_score = (probes.presence(report.features)[keep] >= PRESENT_AT) @ w
    derm_score = report.present[keep] @ w
    probs = calibrated_probs(bundle, report.logits[keep])
    mel = classes.index(FLAG_CLASS)
    out = {"n": int(keep.sum()), "melanomas": int(is_mel.sum()), "present_at": PRESENT_AT,
           "score_threshold": SCORE_THRESHOLD,
           "probe_score": rates(probe_score >= SCORE_THRESHOLD, is_mel),
           "dermatologist_score": rates(derm_score >= SCORE_THRESHOLD, is_mel),
           "classifier_top_class": rates(probs.argmax(1) == mel, is_mel)}
    cfg = flag_config(bundle.meta)
    if cfg is not None:
        out["classifier_melanoma_flag"] = {**rates(probs[:, mel] >= float(cfg["threshold"]), is_mel),
                                           "threshold": cfg["threshold"]}
    a, b = probe_score >= SCORE_THRESHOLD, derm_score >= SCORE_THRESHOLD
    out["agreement"] = {"suggests_melanoma_agreement": round(float(np.mean(a == b)), 4),
                        "suggests_melanoma_kappa": kappa(a, b),
                        "score_spearman": finite(spearmanr(probe_score, derm_score).statistic),
                        "score_mean_abs_difference": round(float(np.mean(np.abs(probe_score - derm_score))), 4)}
    return out


def melanoma_tcav(bundle: Bundle, select: Part, report: Part, runs: int, n_random: int) -> dict:
    """TCAV for the melanoma class on `report` melanomas, CAVs from `select` (model.explain.tcav)."""
    cam = LastStageCam(bundle.model, bundle.input_size)
    mel = bundle.classes.index(FLAG_CLASS)
    is_mel = np.array([r.label == FLAG_CLASS for r in report.records])
    grads = summed_head_gradients(bundle.model, cam.tail, report.stage[is_mel], mel)
    table = tcav_table(select.stage.mean(axis=(2, 3)), select.present, NAMES, grads, runs, n_random)
    return {"class": FLAG_CLASS, "layer": feature_layers(bundle.model)[-1], "n_images": int(is_mel.sum()),
            "runs": runs, "random_concepts": n_random, "test": "two-sided Welch t-test, Bonferroni over 7 criteria",
            "alpha": 0.05, "criteria": table}


def run_concepts(bundle_dir: Path, data: Path, command: str, runs: int = 20, n_random: int = 20,
                 progress: Callable[[str, int, int], None] | None = None, log=print) -> dict:
    """Fit on `select`, measure on `report`, write concepts.safetensors and meta.json
    `interpretability.concepts`; returns what was stored."""
    t0 = time.time()
    bundle = load_bundle(bundle_dir)
    ds = load_dataset(data)
    select, report = (read_part(bundle, ds, s, progress=progress) for s in ("select", "report"))
    probes, cv = fit_probes(select.features, select.present,
                            progress=lambda n, c: log(f"  {n}: L2 {c['chosen_l2']}, select CV AUROC "
                                                      f"{max(c['cv_auroc'].values()):.3f}"))
    record = {"criteria": criteria_report(probes, report), "weights": dict(WEIGHTS),
              "score_threshold": SCORE_THRESHOLD, "n_select": len(select.records), "n": len(report.records),
              "fitted_on": "Derm7pt select (5-fold CV there chooses the L2 strength)",
              "measured_on": "Derm7pt report", "probe": "class-balanced L2 logistic regression on pooled features",
              "cross_validation": cv, "checklist_vs_classifier": checklist_vs_classifier(bundle, probes, report),
              "tcav": melanoma_tcav(bundle, select, report, runs, n_random), "bootstrap": N_BOOT,
              "weights_sha256": weights_sha256(bundle_dir), "seconds": round(time.time() - t0, 1),
              "command": command}
    save_probes(bundle_dir, probes)
    interp = dict(read_meta(bundle_dir).get("interpretability") or {})
    interp["concepts"] = record
    update_meta(bundle_dir, interpretability=interp)
    return record
