"""Batch review's conformal columns and exports, without Streamlit: the prediction set of every
image, whether a given label is in it, the coverage over a labelled upload, and a JSON export."""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd

from app.widgets.tables import stem
from model.inference.results import BatchPrediction


def set_of(p: BatchPrediction, coverage: int) -> list[str] | None:
    return p.prediction_sets.get(int(coverage)) if p.prediction_sets else None


def add_set_columns(df: pd.DataFrame, preds: Sequence[BatchPrediction], coverage: int,
                    labels: dict[str, str] | None = None) -> pd.DataFrame:
    """df (one row per prediction, same order) with 'prediction set', 'set size', 'kNN vote' and,
    given labels, 'label' and 'label in set'."""
    sets = [set_of(p, coverage) for p in preds]
    out = df.assign(**{"prediction set": [" ".join(s) if s is not None else "" for s in sets],
                       "set size": [len(s) if s is not None else None for s in sets],
                       "kNN vote": [p.similar.vote_class if p.similar is not None else "" for p in preds]})
    if labels:
        truth = [labels.get(stem(p.name), "") for p in preds]
        out["label"] = truth
        out["label in set"] = [("yes" if t in s else "no") if t and s is not None else "" for t, s in zip(truth, sets)]
    return out


def set_coverage(preds: Sequence[BatchPrediction], labels: dict[str, str], classes: Sequence[str],
                 coverage: int) -> dict | None:
    """Share of labelled images whose label is in their set (overall and per class), mean set size,
    share of single-class sets; None when no labelled image has a set."""
    rows = [(labels[stem(p.name)], set_of(p, coverage)) for p in preds
            if p.probabilities is not None and labels.get(stem(p.name)) in classes and set_of(p, coverage) is not None]
    if not rows:
        return None
    hit = [t in s for t, s in rows]
    per_class = {}
    for c in classes:
        mine = [h for (t, _), h in zip(rows, hit) if t == c]
        if mine:
            per_class[c] = {"coverage": sum(mine) / len(mine), "n": len(mine)}
    return {"coverage_target": coverage / 100, "n": len(rows), "coverage": sum(hit) / len(rows),
            "mean_set_size": sum(len(s) for _, s in rows) / len(rows),
            "singleton_share": sum(len(s) == 1 for _, s in rows) / len(rows), "per_class": per_class}


def json_export(df: pd.DataFrame, coverage: int, summary: dict | None) -> str:
    """The table as JSON records, with the coverage used and (given labels) the measured coverage."""
    records = json.loads(df.to_json(orient="records"))
    for r in records:
        r["prediction set"] = r["prediction set"].split() if r.get("prediction set") else None
    return json.dumps({"coverage_target": coverage / 100, "set_coverage_on_labels": summary,
                       "images": records}, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
