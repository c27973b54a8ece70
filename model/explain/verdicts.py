"""What the app may say about a heatmap method, from the checks recorded in meta.json
(`python -m model.cli.explanation_checks`). Pure: no torch, so pages can import it.

- `randomisation_failures`: (method, layer) pairs whose maps barely change when the model is
  randomised (`interpretability.sanity.failing`);
- `baseline_verdicts`: per (method, layer), from the paired bootstrap intervals of ROAD minus each
  baseline (`interpretability.faithfulness.versus_baselines`): "more faithful than the baselines"
  only where every interval lies above 0; a baseline whose interval lies wholly above the method's
  (interval below 0) is named as beating it; the rest cannot be told apart.
"""
from __future__ import annotations

FAILS = "fails the randomisation check"
BEATS = "more faithful than the baselines"
BASELINE_NAMES = {"centre": "a centred blob", "lesion_mask": "the blurred lesion mask", "random": "a random map"}


def randomisation_failures(interpretability: dict | None) -> set[tuple[str, str]]:
    sanity = (interpretability or {}).get("sanity") or {}
    return {(m, l) for m, l in sanity.get("failing") or []}


def fails_randomisation(interpretability: dict | None, method: str, layer: str) -> bool:
    return (method, layer) in randomisation_failures(interpretability)


def baseline_verdicts(interpretability: dict | None) -> dict[tuple[str, str], dict]:
    """{(method, layer): {"beats": bool, "losing_to": [baseline], "tied_with": [baseline], "text": str}}."""
    versus = ((interpretability or {}).get("faithfulness") or {}).get("versus_baselines") or {}
    by: dict[tuple[str, str], list[dict]] = {}
    for r in versus.get("rows") or []:
        by.setdefault((r["method"], r["layer"]), []).append(r)
    out = {}
    for key, rows in by.items():
        losing = [r["baseline"] for r in rows if r["ci"][1] < 0]
        tied = [r["baseline"] for r in rows if r["ci"][0] <= 0 <= r["ci"][1]]
        beats = not losing and not tied and len(rows) > 0
        out[key] = {"beats": beats, "losing_to": losing, "tied_with": tied, "text": verdict_text(beats, losing, tied)}
    return out


def verdict_text(beats: bool, losing: list[str], tied: list[str]) -> str:
    if beats:
        return BEATS
    parts = []
    if losing:
        parts.append(f"less faithful than {_names(losing)}: that baseline wins" if len(losing) == 1
                     else f"less faithful than {_names(losing)}: those baselines win")
    if tied:
        parts.append(f"no better than {_names(tied)} (the interval includes 0)")
    return "; ".join(parts)


def _names(baselines: list[str]) -> str:
    names = [BASELINE_NAMES.get(b, b) for b in baselines]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
