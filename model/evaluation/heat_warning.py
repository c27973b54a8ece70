"""What the heat warning is for, and where it is set. A heatmap whose heat lies mostly off the lesion
(on artefacts, or on the skin around it) says the model's answer may rest on something other than the
lesion. How much heat lies off the lesion differs by CAM method (EigenCAM spreads wider than
Grad-CAM), so one fixed share warns on most images for one method and on few for another.

The warning therefore compares each method with itself: it fires when the share of a method's heat
off the lesion is above the 90th percentile of that share over the test split, measured through the
app's own path (Analyzer: working image, segmenter's outline, artefacts taken out of the lesion),
for each image's top class at the default (last) layer. By construction about 1 test image in 10
warns per method; the warning means "less of this heatmap is on the lesion than on 9 in 10 test
images", not "the model is wrong"."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from model.data.dataset import DatasetError, Record
from model.explain.cams import CAM_METHODS

PERCENTILE = 90


def heat_by_method(analyzer, records: Sequence[Record], methods: Sequence[str] = tuple(CAM_METHODS),
                   progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per method: the per-image shares of heat off the lesion and on artefacts (images without an
    outline or any heat are left out)."""
    out = {m: {"off_lesion": [], "artefacts": []} for m in methods}
    for i, r in enumerate(records):
        a = analyzer.analyze(r.image_path.read_bytes(), cam_methods=tuple(methods))
        for m in methods:
            h = a.heat.get(m)
            if h is not None:
                out[m]["off_lesion"].append(h.off_lesion)
                out[m]["artefacts"].append(h.artefacts)
        if progress:
            progress(i + 1, len(records))
    return out


def warning_limits(per_image: dict[str, dict[str, list[float]]], layer: str) -> dict:
    """The figures stored in meta.json `interpretability.heat_warning`."""
    if not any(v["off_lesion"] for v in per_image.values()):
        raise DatasetError("No image with a lesion outline and a heatmap to measure.")
    rows = {}
    for m, v in per_image.items():
        off, art = np.asarray(v["off_lesion"]), np.asarray(v["artefacts"])
        rows[m] = {"n": int(len(off)), "off_lesion_median": round(float(np.median(off)), 4),
                   f"off_lesion_p{PERCENTILE}": round(float(np.percentile(off, PERCENTILE)), 4),
                   "artefacts_mean": round(float(art.mean()), 4),
                   "images_with_heat_on_artefacts_over_10pct": round(float((art > 0.1).mean()), 4)}
    return {"statistic": "share of the heatmap's weight off the lesion (on artefacts or elsewhere)",
            "percentile": PERCENTILE, "layer": layer, "cam_class": "top class",
            "mask": "the app's segmenter outline, artefact pixels (model.inference.artefacts) taken out",
            "off_lesion_limit": {m: r[f"off_lesion_p{PERCENTILE}"] for m, r in rows.items()},
            "per_method": rows}
