"""The 7-point checklist (Argenziano et al., Arch Dermatol 1998) as Derm7pt scores it: each criterion's
column, its clinically relevant binary reading, its weight, and the score. No torch: the app's pages
and the review store read it too.

Major criteria count 2 points, minor 1; a total of 3 or more suggests melanoma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

SCORE_THRESHOLD = 3
PRESENT_AT = 0.5          # a concept probe's probability at or over this counts the criterion as present
RELIABLE_AUROC = 0.70     # a probe under this AUROC on Derm7pt report is shown greyed, as unreliable


@dataclass(frozen=True)
class Criterion:
    name: str                      # the key used in meta.json, predict output and review reads
    column: str                    # Derm7pt metadata.csv column
    label: str                     # for people
    weight: int                    # 2 major, 1 minor
    positive: tuple[str, ...]      # the column values read as "present" (the clinically relevant reading)


CRITERIA: tuple[Criterion, ...] = (
    Criterion("atypical_pigment_network", "pigment_network", "Atypical pigment network", 2, ("atypical",)),
    Criterion("blue_whitish_veil", "blue_whitish_veil", "Blue-whitish veil", 2, ("present",)),
    Criterion("atypical_vascular_pattern", "vascular_structures", "Atypical vascular pattern", 2,
              ("dotted", "linear irregular", "within regression")),
    Criterion("irregular_streaks", "streaks", "Irregular streaks", 1, ("irregular",)),
    Criterion("irregular_pigmentation", "pigmentation", "Irregular pigmentation", 1,
              ("diffuse irregular", "localized irregular")),
    Criterion("irregular_dots_globules", "dots_and_globules", "Irregular dots/globules", 1, ("irregular",)),
    Criterion("regression_structures", "regression_structures", "Regression structures", 1,
              ("blue areas", "white areas", "combinations")),
)
CRITERIA_COLUMNS = tuple(c.column for c in CRITERIA)
NAMES = tuple(c.name for c in CRITERIA)
WEIGHTS = {c.name: c.weight for c in CRITERIA}
BY_NAME = {c.name: c for c in CRITERIA}


def readings(criteria: Sequence[tuple[str, str]]) -> dict[str, bool] | None:
    """Criterion name -> present, from a record's (column, value) pairs; None unless all 7 columns are scored."""
    values = {col: val.strip().lower() for col, val in criteria}
    if any(not values.get(c.column) for c in CRITERIA):
        return None
    return {c.name: values[c.column] in c.positive for c in CRITERIA}


def seven_point_score(present: Mapping[str, bool]) -> int:
    """The checklist's total: the weights of the criteria present."""
    return int(sum(WEIGHTS[name] for name, on in present.items() if on and name in WEIGHTS))


def suggests_melanoma(score: int) -> bool:
    return score >= SCORE_THRESHOLD
