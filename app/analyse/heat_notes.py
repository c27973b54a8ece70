"""Wording for where a heatmap's heat lies: the caption under each heatmap, the heat warning and the
note that the lesion outline runs into an artefact. Pure functions (no Streamlit), so tests read them."""
from __future__ import annotations

from app.widgets.components import percent
from model.explain.attention import HeatShares

ARTEFACT_NAMES = {"ink": "ink marks", "ruler": "a ruler", "vignette": "the dark vignette", "hair": "hair"}

HEAT_WARNING_MEANING = (
    "What this warning means: for each method, the share of heat off the lesion is compared with the same "
    "method on the test split, and the warning shows when it is above that method's 90th percentile (so on "
    "about 1 test image in 10 per method). It says this heatmap looks away from the lesion more than usual; "
    "it does not say the answer is wrong.")


def heat_caption(share: HeatShares | None, has_lesion: bool) -> str:
    """' · 61% of heat on lesion · 12% on artefacts' (artefacts only when 1% or more)."""
    if share is None:
        return "" if has_lesion else " · no lesion to compare with"
    text = f" · {percent(share.lesion, 0)} of heat on lesion"
    return text + (f" · {percent(share.artefacts, 0)} on artefacts" if share.artefacts >= 0.01 else "")


def heat_warning(shares: dict[str, HeatShares | None], limits: dict[str, float], labels: dict[str, str]) -> str | None:
    """The warning for the methods shown whose heat off the lesion is above their own test-split 90th
    percentile; None when no shown method is."""
    over = [(m, s.off_lesion, limits[m]) for m, s in shares.items()
            if s is not None and m in limits and s.off_lesion > limits[m]]
    if not over:
        return None
    parts = "; ".join(f"{labels.get(m, m)}: {percent(off, 0)} off the lesion, where 9 in 10 test images have at most "
                      f"{percent(limit, 0)}" for m, off, limit in over)
    return (f"More of the heat lies off the lesion than usual for this method ({parts}). The score may rest on "
            "something other than the lesion (a ruler, ink, hair, the vignette or the skin around it): look at where "
            "the heat is before relying on the answer.")


def heat_warning_unset(limits: dict[str, float], methods, labels: dict[str, str]) -> str | None:
    """Say so when shown methods have no measured warning threshold."""
    missing = [labels.get(m, m) for m in methods if m not in limits]
    if not missing:
        return None
    return ("No heat warning for " + ", ".join(missing) + ": its threshold was not measured for this classifier "
            "(`python -m model.cli.heat_warning BUNDLE --data DIR`).")


def outline_warning(kinds: list[str]) -> str | None:
    """The lesion outline runs into artefacts: say which, and what it does to the figures."""
    if not kinds:
        return None
    names = [ARTEFACT_NAMES.get(k, k) for k in kinds]
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"The lesion outline runs into {what}. Its measurements may include the artefact; heat on artefact "
            "pixels is counted apart (\"on artefacts\"), not as heat on the lesion.")
