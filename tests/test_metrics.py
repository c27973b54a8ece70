"""Metrics against hand-computed values (model/metrics.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import (calibration_bins, classification_report, confusion_matrix, expected_calibration_error,
                           mask_scores, roc_auc, roc_curve, segmentation_report, softmax)

# 6 samples, 3 classes:  true 0 0 1 2 2 2 / predicted 0 1 1 2 0 2
Y_TRUE = np.array([0, 0, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 1, 2, 0, 2])


def _probs_for(pred, k, top=0.8):
    p = np.full((len(pred), k), (1 - top) / (k - 1))
    p[np.arange(len(pred)), pred] = top
    return p


def test_confusion_matrix():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6
    np.testing.assert_array_equal(confusion_matrix([], [], 2), np.zeros((2, 2)))


def test_classification_report_by_hand():
    rep = classification_report(Y_TRUE, _probs_for(Y_PRED, 3), ["mel", "nv", "bcc"])
    assert rep["n"] == 6
    assert rep["accuracy"] == pytest.approx(4 / 6)
    # recalls 1/2, 1/1, 2/3
    assert rep["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    # precisions 1/2, 1/2, 2/2 -> F1 1/2, 2/3, 4/5
    pc = rep["per_class"]
    assert [pc[c]["precision"] for c in ("mel", "nv", "bcc")] == pytest.approx([0.5, 0.5, 1.0])
    assert [pc[c]["recall"] for c in ("mel", "nv", "bcc")] == pytest.approx([0.5, 1.0, 2 / 3])
    assert [pc[c]["f1"] for c in ("mel", "nv", "bcc")] == pytest.approx([0.5, 2 / 3, 0.8])
    assert [pc[c]["support"] for c in ("mel", "nv", "bcc")] == [2, 1, 3]
    assert rep["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert rep["weighted_f1"] == pytest.approx((0.5 * 2 + 2 / 3 * 1 + 0.8 * 3) / 6)
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    # melanoma (class 0): 1 of 2 melanomas called mel; 3 of 4 non-melanomas not called mel
    assert rep["melanoma_sensitivity"] == pytest.approx(0.5)
    assert rep["melanoma_specificity"] == pytest.approx(0.75)
    assert rep["classes"] == ["mel", "nv", "bcc"]


def test_absent_class_is_left_out_of_macro_averages():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    rep = classification_report(y, _probs_for(pred, 3), ["akiec", "bcc", "vasc"])
    assert rep["per_class"]["vasc"]["support"] == 0
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert rep["per_class"]["vasc"]["auc"] is None
    assert "melanoma_sensitivity" not in rep


def test_perfect_classifier():
    y = np.array([0, 1, 2, 0, 1, 2])
    rep = classification_report(y, _probs_for(y, 3, top=0.9), ["a", "b", "c"])
    assert rep["accuracy"] == rep["balanced_accuracy"] == rep["macro_f1"] == rep["weighted_f1"] == 1.0
    assert rep["macro_auc"] == 1.0


@pytest.mark.parametrize("y, s, expected", [
    ([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.1], 0.75),  # ties count one half: (0.5 + 1) * 2 / 4
    ([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9], 0.875),
    ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], 0.5),  # all tied
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
    ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),
    # positives 0.6, 0.9, 0.1 vs negatives 0.2, 0.6: (1 + 0.5) + (1 + 1) + (0 + 0) = 3.5 of 6 pairs
    ([0, 1, 0, 1, 1], [0.2, 0.6, 0.6, 0.9, 0.1], 3.5 / 6),
])
def test_roc_auc_by_hand(y, s, expected):
    assert roc_auc(np.array(y), np.array(s)) == pytest.approx(expected)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(bool)
    s = rng.integers(0, 10, 200) / 10  # many ties
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_roc_auc_single_class_is_nan():
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert math.isnan(roc_auc(np.array([0, 0]), np.array([0.2, 0.3])))


def test_roc_curve():
    fpr, tpr = roc_curve(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1]))
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    # trapezoid area under the curve equals the rank AUC (ties give the diagonal step)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1])))


def test_ece_by_hand():
    # two at confidence 0.9 (one right) and two at 0.7 (both right):
    # 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.7| = 0.2 + 0.15
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.35)
    centres, acc, conf, counts = calibration_bins(probs, y)
    assert counts.sum() == 4 and sorted(counts[counts > 0]) == [2, 2]
    assert sorted(acc[counts > 0]) == pytest.approx([0.5, 1.0])


def test_ece_zero_when_calibrated():
    probs = np.tile([0.75, 0.25], (4, 1))
    y = np.array([0, 0, 0, 1])  # 75% confident, 75% right
    assert expected_calibration_error(probs, y) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_softmax_and_temperature():
    z = np.array([[2.0, 0.0], [0.0, 0.0]])
    p = softmax(z)
    np.testing.assert_allclose(p.sum(1), 1)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-2)))
    assert softmax(z, temperature=2.0)[0, 0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert np.isfinite(softmax(np.array([[1000.0, 0.0]]))).all()


# ----------------------------------------------------------------------------- segmentation
def _mask(cells, shape=(4, 4)):
    m = np.zeros(shape, bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_dice_and_iou_by_hand():
    pred = _mask([(0, 0), (0, 1), (0, 2), (0, 3)])  # 4 pixels
    true = _mask([(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)])  # 6 pixels, 3 shared
    r = mask_scores(pred, true)
    dice, iou = r["dice"], r["jaccard"]
    assert dice == pytest.approx(2 * 3 / (4 + 6))
    assert iou == pytest.approx(3 / 7)
    pair = lambda p, t: (mask_scores(p, t)["dice"], mask_scores(p, t)["jaccard"])  # noqa: E731
    assert pair(np.zeros((3, 3)), np.zeros((3, 3))) == (1.0, 1.0)
    assert pair(np.ones((3, 3)), np.zeros((3, 3))) == (0.0, 0.0)
    assert pair(true, true) == (1.0, 1.0)
    # the argument order is (prediction, truth): sensitivity counts the truth's pixels found
    half = np.zeros((2, 2), bool)
    half[0, 0] = True
    assert mask_scores(half, np.ones((2, 2), bool))["sensitivity"] == 0.25
    assert mask_scores(np.ones((2, 2), bool), half)["sensitivity"] == 1.0


def test_thresholded_jaccard():
    # image A: IoU 2/4 = 0.5 (< 0.65 -> counts 0); image B: IoU 4/5 = 0.8
    a_pred, a_true = _mask([(0, 0), (0, 1)]), _mask([(0, 0), (0, 1), (0, 2), (0, 3)])
    b_pred, b_true = _mask([(1, 0), (1, 1), (1, 2), (1, 3)]), _mask([(1, 0), (1, 1), (1, 2), (1, 3), (2, 0)])
    rep = segmentation_report([a_pred, b_pred], [a_true, b_true])
    assert rep["n"] == 2
    assert rep["mean_iou"] == pytest.approx((0.5 + 0.8) / 2)
    assert rep["thresholded_jaccard"] == pytest.approx((0 + 0.8) / 2)
    assert rep["mean_dice"] == pytest.approx((2 * 2 / 6 + 2 * 4 / 9) / 2)
    assert rep["per_image_dice"] == [round(2 * 2 / 6, 4), round(8 / 9, 4)]


def test_thresholded_jaccard_boundary():
    # IoU exactly 0.65 is kept, just below is zeroed
    true = np.zeros((1, 100), bool)
    true[0, :100] = True
    at = np.zeros((1, 100), bool)
    at[0, :65] = True
    below = np.zeros((1, 100), bool)
    below[0, :64] = True
    assert segmentation_report([at], [true])["thresholded_jaccard"] == pytest.approx(0.65)
    assert segmentation_report([below], [true])["thresholded_jaccard"] == 0.0
    assert segmentation_report([below], [true])["mean_iou"] == pytest.approx(0.64)


def test_empty_segmentation_report():
    rep = segmentation_report([], [])
    assert rep["n"] == 0 and math.isnan(rep["mean_dice"])
