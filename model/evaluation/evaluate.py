"""Score a bundle on a dataset split: metrics, JSON and an HTML report with plotly figures.

    python -m model.cli.evaluate BUNDLE --data DIR [--split test|val|train|all] [--json OUT] [--html OUT]
    python -m model.cli.evaluate isic --truth GT.csv --pred PRED.csv    (ISIC scoring, no model: model/data/isic.py)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm import tqdm

from model.nets.bundle import Bundle
from model.data.dataset import DatasetError, Record, decode_many
from model.nets.forward import calibrated_probs, classifier_logits, segment_probs
from model.aids.melanoma_flag import flag_config, flag_rates
from model.metrics import (calibration_bins, classification_report, expected_calibration_error, roc_curve,
                      segmentation_report, softmax)
from model.evaluation.report import confusion_figure, html_report, per_class_table, reliability_figure, roc_figure
from model.nets.segmenter import postprocess_mask


def _chunks(records, size, desc, progress):
    bar = tqdm(total=len(records), desc=desc, disable=not progress, leave=False)
    for i in range(0, len(records), size):
        yield records[i:i + size]
        bar.update(min(size, len(records) - i))
    bar.close()


def classifier_split_logits(bundle: Bundle, records: Sequence[Record], batch_size: int = 64,
                            progress: bool = True) -> tuple[np.ndarray, np.ndarray, list]:
    """Raw logits and class indices of labelled records (decoded from their files), and the
    (image_id, reason) of those skipped."""
    classes = bundle.classes
    logits, labels, skipped = [], [], []
    for chunk in _chunks(list(records), batch_size, "evaluate", progress):
        decoded = list(decode_many(chunk, with_masks=False))
        ok = [(r, img) for r, img, _, err in decoded if err is None and r.label in classes]
        skipped += [(r.image_id, err) for r, _, _, err in decoded if err is not None]
        skipped += [(r.image_id, f"class {r.label!r} unknown to the model") for r, img, _, err in decoded
                    if err is None and r.label not in classes]
        if ok:
            logits.append(classifier_logits(bundle, [img for _, img in ok], batch_size))
            labels += [classes.index(r.label) for r, _ in ok]
    if not labels:
        raise DatasetError("No readable, labelled images to evaluate.")
    return np.concatenate(logits), np.asarray(labels), skipped


def evaluate_classifier(bundle: Bundle, records: Sequence[Record], batch_size: int = 64,
                        progress: bool = True) -> dict:
    """Metrics of a classifier bundle on labelled records (decoded from their files)."""
    classes = bundle.classes
    z, y, skipped = classifier_split_logits(bundle, records, batch_size, progress)
    raw, cal = softmax(z), calibrated_probs(bundle, z)
    report = classification_report(y, cal, classes)
    report["temperature"] = bundle.temperature
    report["ece_before_temperature"] = expected_calibration_error(raw, y)
    report["ece_after_temperature"] = report["ece"]
    report["reliability"] = {}
    for name, p in (("before", raw), ("after", cal)):
        centres, acc, conf, counts = calibration_bins(p, y)
        report["reliability"][name] = {"confidence": conf.round(4).tolist(), "accuracy": acc.round(4).tolist(),
                                       "count": counts.tolist()}
    report["roc"] = {}
    for i, c in enumerate(classes):
        if 0 < (y == i).sum() < len(y):
            fpr, tpr = roc_curve(y == i, cal[:, i])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
            report["roc"][c] = {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}
    flag = flag_config(bundle.meta)
    if flag is not None:
        k = classes.index(flag["class"])
        sens, spec = flag_rates(cal[:, k], y == k, float(flag["threshold"]))
        report.update(melanoma_flag_threshold=float(flag["threshold"]), melanoma_flag_sensitivity=sens,
                      melanoma_flag_specificity=spec)
    report["skipped"] = skipped
    return report


def evaluate_segmenter(bundle: Bundle, records: Sequence[Record], batch_size: int = 32,
                       progress: bool = True) -> dict:
    """Dice / IoU / thresholded Jaccard of a segmenter bundle against the records' masks."""
    records = [r for r in records if r.mask_path is not None]
    threshold = float(bundle.meta.get("threshold", 0.5))
    preds, trues, skipped = [], [], []
    for chunk in _chunks(records, batch_size, "evaluate", progress):
        decoded = [d for d in decode_many(chunk, with_masks=True)]
        skipped += [(r.image_id, err) for r, _, _, err in decoded if err is not None]
        ok = [(img, mask) for _, img, mask, err in decoded if err is None]
        if not ok:
            continue
        maps = segment_probs(bundle, [img for img, _ in ok], out_sizes=[m.shape for _, m in ok])
        for p, (_, mask) in zip(maps, ok):
            preds.append(postprocess_mask(p, threshold))
            trues.append(mask)
    if not preds:
        raise DatasetError("No readable images with masks to evaluate.")
    report = segmentation_report(preds, trues)
    report["skipped"] = skipped
    return report


def headline(report: dict) -> dict:
    """The figures worth a line each (what the CLI prints and the README quotes)."""
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc", "ece_before_temperature",
            "ece_after_temperature", "melanoma_sensitivity", "melanoma_specificity", "melanoma_flag_threshold",
            "melanoma_flag_sensitivity", "melanoma_flag_specificity", "mean_dice", "mean_iou",
            "thresholded_jaccard")
    return {k: report[k] for k in keys if k in report}


def report_html(bundle: Bundle, report: dict, split: str) -> str:
    title = f"Evaluation of {bundle.meta['arch']} ({bundle.task}) on split '{split}'"
    note = ("Research and teaching tool, not a medical device. Figures measured by "
            f"`python -m model.cli.evaluate` on {report['n']} images.")
    if bundle.task == "segment":
        from model.evaluation.report import go
        fig = go.Figure(go.Histogram(x=report["per_image_dice"], nbinsx=40))
        fig.update_layout(title="Per-image Dice", xaxis_title="Dice", yaxis_title="images")
        return html_report(title, headline(report), [fig], note=note)
    figs = [confusion_figure(report["confusion_matrix"], report["classes"]),
            roc_figure({c: (v["fpr"], v["tpr"], report["per_class"][c]["auc"]) for c, v in report["roc"].items()}),
            reliability_figure(report["reliability"])]
    return html_report(title, headline(report), figs, {"Per class": per_class_table(report)}, note)
