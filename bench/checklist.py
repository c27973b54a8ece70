"""What the 7-point checklist (issue 24) adds to one analysis: the Analyzer's `checklist` stage
(Analysis.timings_ms: presence from the pooled features, the head's last map, the seven concept maps),
over the committed test images, after a warm-up; and the stage alone, called on one analysis's
outputs in a tight loop (no other work competing within the process).

    python -m bench.checklist [--models assets/models] [--repeats 3] [--out bench/results/checklist.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES = sorted((REPO / "tests" / "data" / "ham_small" / "images").glob("*.jpg")) + \
    sorted((REPO / "tests" / "data" / "fullres" / "images").glob("*.jpg"))


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
            "max_ms": round(ms[-1], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.checklist", description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from model.inference.checklist import head_map
    from model.inference.pipeline import Analyzer

    load_start = os.getloadavg()
    an = Analyzer.from_dir(args.models)
    if not an.checklist.available:
        print(f"error: {an.checklist.error}")
        return 2
    data = [p.read_bytes() for p in IMAGES]
    an.analyze(data[0])  # warm-up
    laps = [an.analyze(d).timings_ms["checklist"] for _ in range(args.repeats) for d in data]
    out = an.engine(np.zeros((1, 3, *an.classifier.input_size), np.float32), ["features", f"stage{len(an.layers) - 1}"])
    feats, stage = out["features"][0], out[f"stage{len(an.layers) - 1}"][0]
    alone = []
    for _ in range(200):
        t = time.perf_counter()
        an.checklist.reading(feats, head_map(an.last_cam.tail, stage, an.device))
        alone.append((time.perf_counter() - t) * 1000)
    models = args.models.resolve()
    res = {"models": str(models.relative_to(REPO)) if models.is_relative_to(REPO) else str(models),
           "images": len(data), "repeats": args.repeats, "cpus": os.cpu_count(),
           "loadavg_at_start": [round(v, 2) for v in load_start], "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
           "runtime": an.analyze(data[0]).runtime, "checklist_stage_in_analyze": summary(laps),
           "checklist_stage_alone": summary(alone), "command": "python -m bench.checklist"}
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
