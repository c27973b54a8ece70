"""Conformal prediction sets: scores, finite-sample coverage (per class), meta.json round trip, notes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model.aids.conformal import (COVERAGES, SCORES, all_sets, calibrate, choose, class_level, conformal_config,
                                  conformal_quantile, conformity_scores, evaluate_sets, set_masks, set_notes, sets_many)

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def synthetic(n: int, rng: np.random.Generator):
    """Exchangeable (probabilities, labels): noisy softmax outputs with labels drawn from a
    slightly different distribution, so the classifier is imperfect and miscalibrated."""
    logits = rng.normal(0, 1.5, (n, len(CLASSES)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.exp(1.3 * logits + rng.normal(0, 0.5, logits.shape))
    truth /= truth.sum(1, keepdims=True)
    labels = np.array([rng.choice(len(CLASSES), p=t) for t in truth])
    return probs, labels


def test_aps_scores_are_cumulative_mass_in_rank_order():
    p = np.array([[0.5, 0.3, 0.2]])
    np.testing.assert_allclose(conformity_scores(p), [[0.5, 0.8, 1.0]])
    np.testing.assert_allclose(conformity_scores(np.array([[0.4, 0.4, 0.2]])), [[0.8, 0.8, 1.0]])  # ties together
    raps = conformity_scores(p, "raps", lam=0.1, k_reg=1)
    np.testing.assert_allclose(raps, [[0.5, 0.9, 1.2]])
    with pytest.raises(ValueError):
        conformity_scores(p, "nope")


def test_quantile_is_finite_sample_corrected_and_infinite_when_too_few():
    scores = np.arange(1, 10) / 10  # 9 scores
    assert conformal_quantile(scores, 0.1) == pytest.approx(0.9)   # ceil(10 * 0.9) = 9th
    assert conformal_quantile(scores, 0.2) == pytest.approx(0.8)   # ceil(8.0) = 8th
    assert math.isinf(conformal_quantile(scores, 0.05))            # ceil(9.5) = 10 > 9
    cfg = calibrate(*synthetic(60, np.random.default_rng(1)), CLASSES, coverages=(99,))
    # about 8 images per class: 99% cannot be promised, so every class is always in the set
    assert all(v is None for v in cfg["thresholds"]["99"].values())
    assert set_masks(np.full((2, 7), 1 / 7), cfg, CLASSES, 99).all()


@pytest.mark.parametrize("score,always_top", [("lac", False), ("aps", False), ("raps", False), ("lac", True)])
def test_class_conditional_coverage_within_the_finite_sample_bound(score, always_top):
    """Averaged over random calibration/test splits of exchangeable data, every class's coverage
    lies in [1 - alpha, 1 - alpha + 1/(n_k + 1)] (up to Monte Carlo error); adding the top class
    only raises it (the upper bound is then not promised)."""
    rng = np.random.default_rng(0)
    probs, labels = synthetic(6000, rng)
    cover = {c: [] for c in CLASSES}
    n_cal = {c: [] for c in CLASSES}
    marginal = []
    for _ in range(60):
        idx = rng.permutation(len(labels))
        cal, test = idx[:1500], idx[1500:]
        cfg = calibrate(probs[cal], labels[cal], CLASSES, score, coverages=(90,), always_top=always_top)
        r = evaluate_sets(probs[test], labels[test], cfg, CLASSES, 90)
        marginal.append(r["coverage"])
        for c in CLASSES:
            cover[c].append(r["per_class"][c]["coverage"])
            n_cal[c].append(cfg["n_per_class"][c])
    for c in CLASSES:
        level = class_level(90, c) / 100          # melanoma is calibrated stricter (STRICTER)
        upper = level + 1 / (np.mean(n_cal[c]) + 1) if not always_top else 1.0
        assert level - 0.01 <= np.mean(cover[c]) <= upper + 0.01, (c, np.mean(cover[c]), upper)
    assert 0.9 - 0.005 <= np.mean(marginal) <= (0.935 if not always_top else 1.0)


def test_melanoma_is_calibrated_stricter_than_the_stated_coverage():
    """At a stated 90%, melanoma's threshold is the one for 95% (capped at 99%); the others keep 90%; the
    stricter classes are stored and said in words."""
    from model.aids.conformal import STRICTER, coverage_phrase

    assert STRICTER == {"mel": 5} and class_level(90, "mel") == 95 and class_level(97, "mel") == 99
    assert class_level(99, "mel") == 99 and class_level(90, "nv") == 90 and class_level(90, "mel", {}) == 90
    probs, labels = synthetic(3000, np.random.default_rng(5))
    cfg = calibrate(probs, labels, CLASSES, coverages=(90, 95))
    plain = calibrate(probs, labels, CLASSES, coverages=(90, 95), stricter={})
    assert cfg["stricter"] == {"mel": 5} and plain["stricter"] == {}
    assert cfg["thresholds"]["90"]["mel"] == pytest.approx(plain["thresholds"]["95"]["mel"])
    assert cfg["thresholds"]["90"]["mel"] > plain["thresholds"]["90"]["mel"]
    assert all(cfg["thresholds"]["90"][c] == plain["thresholds"]["90"][c] for c in CLASSES if c != "mel")
    hit = lambda c: evaluate_sets(probs, labels, c, CLASSES, 90)["per_class"]["mel"]["coverage"]   # noqa: E731
    assert hit(cfg) >= 0.95 > hit(plain)
    assert calibrate(probs, labels, CLASSES, coverages=(90,), mondrian=False)["stricter"] == {}
    assert coverage_phrase(90, cfg["stricter"]) == "90% of the time for each class on its own (melanoma: 95%)"
    assert coverage_phrase(90, {}) == "90% of the time for each class on its own"


def test_marginal_variant_misses_rare_classes_that_mondrian_covers():
    """Why Mondrian: with a poor, rare class the pooled threshold under-covers it."""
    rng = np.random.default_rng(3)
    n = 8000
    labels = rng.choice(3, n, p=[0.9, 0.08, 0.02])
    logits = np.log([0.7, 0.2, 0.1]) + rng.normal(0, 0.1, (n, 3))  # a classifier that knows little
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cal, test = slice(0, 4000), slice(4000, None)
    cls = ["a", "b", "c"]
    pooled = evaluate_sets(probs[test], labels[test], calibrate(probs[cal], labels[cal], cls, mondrian=False), cls)
    mondrian = evaluate_sets(probs[test], labels[test], calibrate(probs[cal], labels[cal], cls), cls)
    assert pooled["per_class"]["c"]["coverage"] < 0.85
    assert all(v["coverage"] >= 0.85 for v in mondrian["per_class"].values())


def test_sets_grow_with_coverage_and_config_round_trips_through_json():
    probs, labels = synthetic(2000, np.random.default_rng(2))
    cfg = json.loads(json.dumps(calibrate(probs, labels, CLASSES)))  # as stored in meta.json
    meta = {"classes": CLASSES, "conformal": cfg}
    assert conformal_config(meta) is cfg
    assert conformal_config({"classes": CLASSES[:-1], "conformal": cfg}) is None    # other classes: unusable
    assert conformal_config({"classes": CLASSES}) is None
    sets = all_sets(probs[0], cfg, CLASSES)
    assert sorted(sets) == list(range(80, 100))
    for lo, hi in zip(range(80, 99), range(81, 100)):
        assert set(sets[lo]) <= set(sets[hi])
    members = sets[90]
    p = probs[0][[CLASSES.index(c) for c in members]]
    assert list(p) == sorted(p, reverse=True)  # most probable first
    sizes = [set_masks(probs, cfg, CLASSES, c).sum(1).mean() for c in (80, 90, 99)]
    assert sizes[0] <= sizes[1] <= sizes[2]


def test_plain_language_notes():
    notes = set_notes(["nv", "mel"], "nv", 90)
    assert any("Melanoma cannot be ruled out at 90%" in n for n in notes)
    assert not any("Uncertain" in n for n in notes)
    assert any("Uncertain: 3 diagnoses" in n for n in set_notes(["nv", "bkl", "df"], "nv", 95))
    assert not any("ruled out" in n for n in set_notes(["mel", "nv"], "mel", 90))  # top class already malignant
    assert "single" in set_notes(["nv"], "nv", 90)[0].lower()
    assert "No diagnosis" in set_notes([], "nv", 90)[0]


def test_melanoma_is_named_first_among_malignant_classes():
    note = set_notes(["nv", "bcc", "mel"], "nv", 85)[0]
    assert note.startswith("Melanoma cannot be ruled out at 85% (nor basal cell carcinoma)")


def test_raps_parameters_are_stored_and_used_at_prediction():
    probs, labels = synthetic(3000, np.random.default_rng(5))
    cfg = calibrate(probs[:1500], labels[:1500], CLASSES, "raps", coverages=(90,), lam=0.3, k_reg=2)
    assert (cfg["raps_lambda"], cfg["raps_k_reg"]) == (0.3, 2)
    r = evaluate_sets(probs[1500:], labels[1500:], cfg, CLASSES, 90)
    assert 0.86 <= r["coverage"] <= 0.95


# ----------------------------------------------------------------------------- sets a clinician can read

def _calibrated(score: str, always_top: bool):
    probs, labels = synthetic(3000, np.random.default_rng(11))
    return calibrate(probs, labels, CLASSES, score, always_top=always_top)


CONFIGS = {(s, t): _calibrated(s, t) for s in ("lac", "aps", "raps") for t in (False, True)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=7, max_size=7).filter(lambda v: sum(v) > 1e-6),
       st.sampled_from(("lac", "aps", "raps")), st.sampled_from(COVERAGES))
def test_a_set_is_never_empty_and_keeps_a_top_class_of_half_or_more(values, score, coverage):
    p = np.asarray(values) / sum(values)
    cfg = CONFIGS[(score, True)]
    codes = all_sets(p, cfg, CLASSES)[coverage]
    assert codes, "empty set"
    assert CLASSES[int(p.argmax())] in codes
    assert codes == sorted(codes, key=lambda c: -p[CLASSES.index(c)])  # most probable first
    many = sets_many(np.stack([p, p[::-1]]), cfg, CLASSES)
    assert many[0][coverage] == codes and CLASSES[int(p[::-1].argmax())] in many[1][coverage]


def test_without_the_top_class_a_confident_answer_could_leave_its_own_set():
    """The defect the rule mends: under APS a p = 0.99 image scores 0.99 for its own class, above that
    class's threshold, so the set left the top class out."""
    p = np.array([[0.001, 0.001, 0.002, 0.001, 0.002, 0.99, 0.003]])
    old = CONFIGS[("aps", False)]
    assert not set_masks(p, old, CLASSES, 90)[0, CLASSES.index("nv")]
    assert set_masks(p, CONFIGS[("aps", True)], CLASSES, 90)[0, CLASSES.index("nv")]


def test_choose_compares_every_score_and_picks_one_that_adds_the_top_class():
    probs, labels = synthetic(2000, np.random.default_rng(5))
    chosen, rows = choose(probs, labels, CLASSES)
    assert {(r["score"], r["always_top"]) for r in rows} == {(s, t) for s in SCORES for t in (False, True)}
    assert chosen["always_top"] is True and chosen["score"] in SCORES
    best = next(r for r in rows if (r["score"], r["always_top"]) == (chosen["score"], True))
    assert all(r["top_dropped_share"] == 0 and r["empty_share"] == 0 for r in rows if r["always_top"])
    eligible = [r for r in rows if r["always_top"] and r["coverage"] >= 0.9]
    assert best["mean_set_size"] == min(r["mean_set_size"] for r in eligible)
