"""Issue 26.3: "white" among the colours of every lesion. The colour rules (CIELAB reference colours,
distance thresholds, specular highlights left out, a minimum share per colour) against colours set by
eye on tests/data/labelled, and the cases that made the old rule say "white"."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.inference.measurements import colour_variegation

LABELLED = Path(__file__).resolve().parent / "data" / "labelled"


@pytest.fixture(scope="module")
def cases():
    from model.evaluation.label_agreement import load_labelled

    return [c for c in load_labelled(LABELLED) if c.colours is not None]


def _said(cases, colour):
    return np.array([colour in colour_variegation(c.rgb, c.mask)[0] for c in cases])


def test_labelled_colour_set_is_large_enough_with_a_holdout(cases):
    assert len(cases) >= 30
    assert sum(c.part == "holdout" for c in cases) >= 15
    for colour in ("white", "red", "light brown", "dark brown", "blue-gray", "black"):
        assert sum(colour in c.colours for c in cases) >= 10, colour


def test_white_is_not_said_of_most_lesions_without_it(cases):
    """The old rule said white on 64% of lesions (annotated: 10%); here, of the labelled lesions
    without white, at most a quarter get it."""
    no_white = [c for c in cases if "white" not in c.colours]
    assert len(no_white) >= 40
    assert _said(no_white, "white").mean() <= 0.25


def test_light_brown_is_not_said_of_every_lesion(cases):
    """The old rule said light brown on every lesion (specificity 0.00)."""
    without = [c for c in cases if "light brown" not in c.colours]
    assert len(without) >= 10 and _said(without, "light brown").mean() <= 0.4


def test_balanced_accuracy_per_colour_on_the_holdout(cases):
    """Floors under what `python -m model.cli.label_agreement` measured on the part never tuned on."""
    from model.evaluation.label_agreement import colour_agreement

    fig = colour_agreement(cases)
    for colour, row in fig["all"].items():
        assert row["balanced_accuracy"] >= (0.55 if colour == "white" else 0.75), (colour, row)
    assert fig["all"]["white"]["specificity"] >= 0.9           # the old rule: 0.35 from outside
    for colour in ("red", "light brown", "dark brown", "blue-gray", "black"):
        assert fig["holdout"][colour]["balanced_accuracy"] >= 0.75, colour


def test_specular_highlights_are_not_white():
    """A brown lesion with bright reflections on it: no white (the old rule counted them)."""
    rgb = np.full((150, 200, 3), (205, 160, 140), np.uint8)         # skin
    mask = np.zeros((150, 200), bool)
    mask[40:110, 60:140] = True
    rgb[mask] = (120, 75, 45)                                          # brown lesion
    rng = np.random.default_rng(0)
    for y, x in rng.integers((45, 65), (105, 135), size=(40, 2)):
        rgb[y:y + 3, x:x + 3] = (252, 252, 250)                         # specular glints, ~7% of the lesion
    names, _ = colour_variegation(rgb, mask)
    assert "white" not in names and names


def test_a_pink_cast_does_not_make_brown_red():
    """The same lesion photographed with a pink-purple cast keeps its colours (white balance on skin)."""
    rgb = np.full((150, 200, 3), (205, 160, 140), np.uint8)
    mask = np.zeros((150, 200), bool)
    mask[40:110, 60:140] = True
    rgb[mask] = (160, 110, 70)
    rgb[60:90, 80:120] = (95, 60, 40)
    plain, _ = colour_variegation(rgb, mask)
    cast = np.clip(rgb.astype(np.float32) * (1.05, 0.85, 1.2), 0, 255).astype(np.uint8)
    tinted, _ = colour_variegation(cast, mask)
    assert plain == tinted and "red" not in tinted
