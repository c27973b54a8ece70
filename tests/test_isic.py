"""ISIC formats and scoring without a model: the Task 3 figures agree with scikit-learn's
definitions (which the ISIC scorer calls), balanced accuracy is mean recall with ties counted
wrong, the thresholded Jaccard of Task 1 zeroes poor masks, and malformed files get a message."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.cli.isic import main
from model.data.isic import (ISIC2018_COLUMNS, IsicFormatError, auc_above_sensitivity, average_precision,
                             balanced_accuracy, isic2018_order, roc_points, score_task1, score_task3,
                             sensitivity_at_specificity)


def _write(path: Path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _random_task3(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, size=n, p=[.15, .5, .1, .05, .1, .05, .05])
    truth = np.eye(7)[labels]
    logits = rng.normal(size=(n, 7)) + 2.0 * truth
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    t = _write(tmp_path / "gt.csv", ["image", *ISIC2018_COLUMNS], [[i, *r] for i, r in zip(ids, truth)])
    order = rng.permutation(n)  # prediction rows in another order, with .jpg names, columns shuffled
    cols = list(rng.permutation(7))
    p = _write(tmp_path / "pred.csv", ["image", *[ISIC2018_COLUMNS[c] for c in cols]],
               [[ids[k] + ".jpg", *(f"{probs[k, c]:.8f}" for c in cols)] for k in order])
    return t, p, labels, probs


def test_task3_matches_scikit_learn_definitions(tmp_path):
    sk = pytest.importorskip("sklearn.metrics")
    t, p, labels, probs = _random_task3(tmp_path)
    rep = score_task3(t, p)
    assert rep["n"] == 200 and rep["categories"] == list(ISIC2018_COLUMNS)
    assert rep["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(labels, probs.argmax(1)), abs=1e-9)
    for k, c in enumerate(ISIC2018_COLUMNS):
        y = labels == k
        got = rep["per_category"][c]
        assert got["auc"] == pytest.approx(sk.roc_auc_score(y, probs[:, k]), abs=1e-6)
        assert got["ap"] == pytest.approx(sk.average_precision_score(y, probs[:, k]), abs=1e-6)
        pred = probs[:, k] > 0.5
        assert got["sensitivity"] == pytest.approx(sk.recall_score(y, pred, zero_division=1.0))
        assert got["dice"] == pytest.approx(sk.f1_score(y, pred, zero_division=1.0))
        # partial AUC above 80% sensitivity: area under the curve over the part where TPR >= 0.8
        fpr, tpr, _ = sk.roc_curve(y, probs[:, k], drop_intermediate=False)
        x = np.linspace(0, 1, 200001)
        curve = np.interp(x, fpr, tpr)  # the step-free ROC; integrate where it is at least 0.8
        approx = np.trapezoid(np.where(curve >= 0.8, curve, 0.0), x)
        assert got["auc_sens_80"] == pytest.approx(approx, abs=2e-3)
    assert rep["macro_average"]["auc"] == pytest.approx(np.mean([rep["per_category"][c]["auc"]
                                                                 for c in ISIC2018_COLUMNS]))


def test_reference_points_of_the_curve_metrics():
    y = np.array([True, True, False, False])
    perfect = roc_points(y, np.array([.9, .8, .2, .1]), np.ones(4))
    assert auc_above_sensitivity(*perfect) == pytest.approx(1.0)
    assert sensitivity_at_specificity(*perfect) == 1.0
    rng = np.random.default_rng(0)  # a random ranking: about (1 - 0.8**2) / 2 = 0.18
    y = rng.random(20000) < 0.3
    fpr, tpr = roc_points(y, rng.random(20000), np.ones(20000))
    assert auc_above_sensitivity(fpr, tpr) == pytest.approx(0.18, abs=0.01)
    assert sensitivity_at_specificity(fpr, tpr) == pytest.approx(0.2, abs=0.02)
    assert average_precision(y, rng.random(20000), np.ones(20000)) == pytest.approx(0.3, abs=0.02)


def test_balanced_accuracy_is_mean_recall_and_a_tie_is_wrong():
    truth = np.eye(3)[[0, 0, 1, 2]]
    pred = np.array([[.9, .05, .05], [.5, .5, 0], [0, 1, 0], [0, 0, 1]])  # row 2: a tie for the top
    assert balanced_accuracy(truth, pred, np.ones(4)) == pytest.approx((0.5 + 1 + 1) / 3)
    # a category absent from the truth does not count
    truth2 = np.eye(3)[[0, 0, 1, 1]]
    assert balanced_accuracy(truth2, np.eye(3)[[0, 2, 1, 1]], np.ones(4)) == pytest.approx(0.75)


def test_isic2018_order_maps_any_class_order():
    classes = ["vasc", "akiec", "nv", "bkl", "mel", "df", "bcc"]
    order = isic2018_order(classes)
    assert [classes[i] for i in order] == ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
    with pytest.raises(IsicFormatError, match="VASC"):
        isic2018_order(["mel", "nv", "bcc", "akiec", "bkl", "df"])


def test_malformed_predictions_are_refused_with_a_reason(tmp_path):
    t, p, *_ = _random_task3(tmp_path, n=20)
    rows = list(csv.reader(open(p)))
    _write(tmp_path / "short.csv", rows[0], rows[1:-1])
    with pytest.raises(IsicFormatError, match="missing from the predictions"):
        score_task3(t, tmp_path / "short.csv")
    _write(tmp_path / "dup.csv", rows[0], rows[1:] + rows[1:2])
    with pytest.raises(IsicFormatError, match="duplicate"):
        score_task3(t, tmp_path / "dup.csv")
    _write(tmp_path / "cols.csv", rows[0][:-1], [r[:-1] for r in rows[1:]])
    with pytest.raises(IsicFormatError, match="missing column"):
        score_task3(t, tmp_path / "cols.csv")
    _write(tmp_path / "range.csv", rows[0], [[r[0], "1.5", *r[2:]] for r in rows[1:]])
    with pytest.raises(IsicFormatError, match=r"\[0, 1\]"):
        score_task3(t, tmp_path / "range.csv")
    assert main(["--truth", str(t), "--pred", str(tmp_path / "short.csv")]) == 2


def _mask(path: Path, box, size=(40, 30)):
    a = np.zeros(size[::-1], np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    Image.fromarray(a).save(path)


def test_task1_thresholded_jaccard(tmp_path):
    truth, pred = tmp_path / "t", tmp_path / "p"
    truth.mkdir(), pred.mkdir()
    _mask(truth / "A_segmentation.png", (0, 0, 20, 20))
    _mask(pred / "A_segmentation.png", (0, 0, 20, 16))    # Jaccard 0.8: kept
    _mask(truth / "B_segmentation.png", (0, 0, 20, 20))
    _mask(pred / "B_segmentation.png", (0, 0, 20, 10))    # Jaccard 0.5: below 0.65, scores 0
    rep = score_task1(truth, pred)
    assert rep["per_image"]["A"]["jaccard"] == pytest.approx(0.8)
    assert rep["per_image"]["B"]["threshold_jaccard"] == 0.0
    assert rep["threshold_jaccard"] == pytest.approx(0.4)
    assert rep["macro_average"]["jaccard"] == pytest.approx(0.65)
    _mask(pred / "B_segmentation.png", (0, 0, 20, 10), size=(20, 15))
    with pytest.raises(IsicFormatError, match="own size"):
        score_task1(truth, pred)


def test_evaluate_cli_scores_a_csv_and_writes_truth(tmp_path, ham_small, capsys):
    from model.cli.evaluate import main as evaluate_main

    gt = tmp_path / "gt.csv"
    assert evaluate_main(["isic", "--write-truth", str(ham_small), "--truth", str(gt)]) == 0
    rows = list(csv.reader(open(gt)))
    assert rows[0] == ["image", *ISIC2018_COLUMNS] and len(rows) == 43
    assert all(sorted(r[1:]) == ["0.0"] * 6 + ["1.0"] for r in rows[1:])
    _write(tmp_path / "pred.csv", rows[0], rows[1:])  # the truth itself scores perfectly
    assert evaluate_main(["isic", "--truth", str(gt), "--pred", str(tmp_path / "pred.csv"),
                          "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "balanced accuracy 1.0000" in out and "auc_sens_80" in out
