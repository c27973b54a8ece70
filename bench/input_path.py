"""The one input path's cost: an uploaded image (decoded at the working size) -> the training images'
domain (model.data.domain: bicubic to the training size, JPEG round trip, colour constancy when the
bundle asks for it), per image, as the classifier's bundle sets it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from bench.common import summarize


def bench_input_path(models: Path, images: Sequence[Path], repeats: int) -> dict:
    from model.data.domain import domain_of, to_training_domain
    from model.inference.working import working_image
    from model.nets.bundle import read_meta

    domain = domain_of(read_meta(models / "classifier"))
    rgbs = [working_image(p.read_bytes(), [])[0] for p in images]
    times = []
    for _ in range(max(3, repeats)):
        for rgb in rgbs:
            t0 = time.perf_counter()
            to_training_domain(rgb, domain)
            times.append((time.perf_counter() - t0) * 1000)
    return {"domain": domain, "image_sizes": sorted({f"{r.shape[1]}x{r.shape[0]}" for r in rgbs}),
            "ms_per_image": summarize(times)}
