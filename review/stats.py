"""What a study found, from its read rows (plain dicts from Store.reads): no database, no UI.

- `accuracy`: per reader and overall, on finished reads of cases with a known truth: reader
  accuracy before and after the AI, the AI's own on the same cases (only where the gate showed its
  answer: a withheld answer is no AI answer, and `ai_gated` counts those reads apart), and how often
  the AI turned a right read wrong or a wrong read right; `per_class` does the same by true class.
- `heatmap_ratings`: per CAM method, how many heatmaps were rated and the share rated "on an
  artefact", beside the mean automatic heat-in-lesion share and ROAD score of the same heatmaps.
- `export_rows`: one flat row per read for CSV / JSON export.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Iterable


def _finished_labelled(reads: Iterable[dict]) -> list[dict]:
    return [r for r in reads if r.get("final_at") and r.get("truth")]


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    if not n:
        return {"n": 0, "before": None, "after": None, "ai": None, "ai_n": 0, "ai_gated": 0, "right_to_wrong": 0,
                "wrong_to_right": 0}
    before = [r["blind_dx"] == r["truth"] for r in rows]
    after = [r["final_dx"] == r["truth"] for r in rows]
    ai = [r["ai_top"] == r["truth"] for r in rows if r.get("ai_top") and not r.get("ai_gated")]
    return {"n": n, "before": sum(before) / n, "after": sum(after) / n, "ai": sum(ai) / len(ai) if ai else None,
            "ai_n": len(ai), "ai_gated": sum(bool(r.get("ai_gated")) for r in rows),
            "right_to_wrong": sum(b and not a for b, a in zip(before, after)),
            "wrong_to_right": sum(a and not b for b, a in zip(before, after))}


def accuracy(reads: Iterable[dict]) -> list[dict]:
    """One row per reader and an 'all readers' row: accuracies (0-1) and change counts."""
    rows = _finished_labelled(reads)
    by_reader: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_reader[r["reader"]].append(r)
    out = [{"reader": name, **_summary(rs)} for name, rs in sorted(by_reader.items())]
    return out + [{"reader": "all readers", **_summary(rows)}] if rows else out


def per_class(reads: Iterable[dict], classes: Iterable[str]) -> list[dict]:
    """The same figures grouped by true class (classes without a labelled read are left out)."""
    rows = _finished_labelled(reads)
    return [{"class": c, **_summary([r for r in rows if r["truth"] == c])}
            for c in classes if any(r["truth"] == c for r in rows)]


def heatmap_ratings(reads: Iterable[dict]) -> list[dict]:
    """Per CAM method: rated heatmaps, share 'on an artefact' (and which), mean heat-in-lesion, mean ROAD."""
    acc: dict[str, dict] = defaultdict(lambda: {"n": 0, "artefact": 0, "kinds": defaultdict(int), "share": [],
                                                "road": []})
    for r in reads:
        for h in r.get("heatmaps") or []:
            if not h.get("rating"):
                continue
            a = acc[h.get("method") or "?"]
            a["n"] += 1
            if h["rating"] == "on an artefact":
                a["artefact"] += 1
                a["kinds"][h.get("artefact") or "unspecified"] += 1
            if h.get("heat_in_lesion") is not None:
                a["share"].append(float(h["heat_in_lesion"]))
            if h.get("road") is not None:
                a["road"].append(float(h["road"]))
    return [{"method": m, "rated": a["n"], "on_artefact": a["artefact"] / a["n"] if a["n"] else None,
             "artefacts": dict(a["kinds"]),
             "heat_in_lesion": sum(a["share"]) / len(a["share"]) if a["share"] else None,
             "road": sum(a["road"]) / len(a["road"]) if a["road"] else None}
            for m, a in sorted(acc.items())]


EXPORT_COLUMNS = ["study", "reader", "case_position", "case_name", "image_sha256", "truth", "blind_dx",
                  "blind_confidence", "blind_biopsy", "blind_at", "ai_top", "ai_probability", "ai_gated",
                  "ai_gate_reasons", "final_dx",
                  "final_biopsy", "changed_by_ai", "heatmap_methods", "heatmap_ratings", "heatmap_artefacts",
                  "note", "final_at", "classifier_version", "segmenter_version", "aids_seen", "heatmaps_json"]


def export_rows(reads: Iterable[dict], study_name: str) -> list[dict]:
    """Every read as one flat row (EXPORT_COLUMNS), in the order they were made."""
    out = []
    for r in reads:
        hm = r.get("heatmaps") or []
        out.append({
            "study": study_name, "reader": r["reader"], "case_position": int(r["position"]) + 1,
            "case_name": r["case_name"], "image_sha256": r["image_sha256"], "truth": r.get("truth"),
            "blind_dx": r["blind_dx"], "blind_confidence": r["blind_confidence"],
            "blind_biopsy": bool(r["blind_biopsy"]), "blind_at": r["blind_at"], "ai_top": r.get("ai_top"),
            "ai_probability": r.get("ai_probability"),
            "ai_gated": None if r.get("ai_gated") is None else bool(r["ai_gated"]),
            "ai_gate_reasons": ";".join(str(a) for a in r.get("ai_gate_reasons") or []), "final_dx": r.get("final_dx"),
            "final_biopsy": None if r.get("final_biopsy") is None else bool(r["final_biopsy"]),
            "changed_by_ai": None if r.get("changed_by_ai") is None else bool(r["changed_by_ai"]),
            "heatmap_methods": ";".join(str(h.get("method")) for h in hm),
            "heatmap_ratings": ";".join(str(h.get("rating") or "") for h in hm),
            "heatmap_artefacts": ";".join(str(h.get("artefact") or "") for h in hm),
            "note": r.get("note") or "", "final_at": r.get("final_at"),
            "classifier_version": r.get("classifier_version"), "segmenter_version": r.get("segmenter_version"),
            "aids_seen": ";".join(str(a) for a in r.get("aids_seen") or []), "heatmaps_json": json.dumps(hm)})
    return out
