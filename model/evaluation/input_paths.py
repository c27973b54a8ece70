"""How much an answer depends on the pipeline an image came through: full-resolution photographs
against their 200x150 twins (the same photographs, downscaled and saved at JPEG quality 75, as the
training images were), each candidate input path tried on both.

For every candidate: top-class agreement between the twins, |delta p| per class (median and max over
the pairs), and how many of each side the quality gate flags. The candidate is a bundle's
`preprocessing` setting (model.data.domain); the analysis is the app's own batch path."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from model.data.domain import DEFAULT_DOMAIN, LEGACY_DOMAIN
from model.inference.results import gated
from model.inference.pipeline import Analyzer

CANDIDATES: dict[str, dict] = {
    "resize to the input only (before)": dict(LEGACY_DOMAIN),
    "bicubic to the training size": {**DEFAULT_DOMAIN, "jpeg_quality": None},
    "bilinear + JPEG 75": {**DEFAULT_DOMAIN, "resample": "bilinear"},
    "box (area) + JPEG 75": {**DEFAULT_DOMAIN, "resample": "box"},
    "Lanczos + JPEG 75": {**DEFAULT_DOMAIN, "resample": "lanczos"},
    "bicubic + JPEG 75, own aspect kept": {**DEFAULT_DOMAIN, "aspect": "keep"},
    "bicubic + JPEG 75, centre crop to 4:3": {**DEFAULT_DOMAIN, "aspect": "crop"},
    "bicubic + JPEG 75 (the training images' pipeline)": dict(DEFAULT_DOMAIN),
}


def with_domain(classifier, domain: dict) -> Analyzer:
    """An Analyzer whose classifier takes `domain` as its input path (keeping its own colour constancy)."""
    path = {**domain, "colour_constancy": classifier.domain.get("colour_constancy")}
    return Analyzer(dataclasses.replace(classifier, meta={**classifier.meta, "preprocessing": path}))


def compare(analyzer, pairs: Sequence[tuple[str, bytes, bytes]]) -> dict:
    """pairs: (image id, full-resolution bytes, twin bytes) -> the figures of one candidate."""
    full = analyzer.classify_many([(i, f) for i, f, _ in pairs])
    twin = analyzer.classify_many([(i, t) for i, _, t in pairs])
    ok = [(a, b) for a, b in zip(full, twin) if a.error is None and b.error is None]
    pa = np.stack([a.probabilities for a, _ in ok])
    pb = np.stack([b.probabilities for _, b in ok])
    delta = np.abs(pa - pb)
    return {"n": len(ok), "top_class_agrees": int((pa.argmax(1) == pb.argmax(1)).sum()),
            "abs_dp_median": {c: float(np.median(delta[:, k])) for k, c in enumerate(analyzer.classes)},
            "abs_dp_max": {c: float(delta[:, k].max()) for k, c in enumerate(analyzer.classes)},
            "gated_full": int(sum(gated(a.flags) for a, _ in ok)),
            "gated_twin": int(sum(gated(b.flags) for _, b in ok)),
            "disagreeing": [a.name for a, b in ok if a.top_class != b.top_class]}


def paired_table(classifier, pairs, candidates: dict[str, dict] = CANDIDATES) -> dict:
    """Every candidate's figures, by candidate name."""
    return {name: compare(with_domain(classifier, dom), pairs)
            for name, dom in candidates.items()}


def markdown(table: dict, classes: Sequence[str]) -> str:
    head = ("| input path | top class agrees | median abs dp (" + ", ".join(classes) + ") | max abs dp | gated "
            "full-res / twin |\n|---|---:|---|---|---:|")
    rows = []
    for name, r in table.items():
        med = " / ".join(f"{r['abs_dp_median'][c]:.3f}" for c in classes)
        mx = " / ".join(f"{r['abs_dp_max'][c]:.2f}" for c in classes)
        rows.append(f"| {name} | {r['top_class_agrees']} of {r['n']} | {med} | {mx} | "
                    f"{r['gated_full']} / {r['gated_twin']} |")
    return "\n".join([head] + rows)
