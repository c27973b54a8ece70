"""What-if speed (issue 25: each within 150 ms on 2 cores): for every what-if of the Analyse page's
panel, `Analyzer.what_if` (drawing it on the analysed image, classifying, the heatmap, prediction
sets) plus what the panel draws (the heatmap over the what-if, the probability rows), per image.

    python -m bench.what_if [--models assets/models] [--threads 2] [--repeats 5] [--out FILE.json]

Images: assets/examples/*.jpg and tests/data/fullres/images/*.jpg (real dermoscopy, 600x450). One
untimed warm-up per image; median and p95 over images x repeats. Run on an idle machine: the JSON
records the load average and the CPUs' busy share at the start.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 150.0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.what_if", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", nargs="+", help="image files (default: the examples and the full-resolution set)")
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--out", type=Path, help="JSON file (default: print only)")
    return ap.parse_args(argv)


def _stats(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "n": len(ms)}


def bench(analyzer, images: list[Path], repeats: int, method: str) -> dict:
    """{what-if: {median_ms, p95_ms, n, within_target}} over images x repeats (analysis untimed)."""
    from app.analyse.whatif import probability_rows
    from app.widgets.components import heatmap_overlay
    from model.explain.confounders import WHAT_IFS, WhatIfError

    times: dict[str, list[float]] = {n: [] for n in WHAT_IFS}
    skipped: dict[str, int] = {n: 0 for n in WHAT_IFS}
    for path in images:
        a = analyzer.analyze(path.read_bytes(), cam_methods=(method,))
        for name in WHAT_IFS:
            try:
                analyzer.what_if(a.image, name, a.lesion_mask, cam_method=method)  # warm-up
            except WhatIfError:
                skipped[name] += 1
                continue
            for _ in range(repeats):
                gc.collect()
                t = time.perf_counter()
                w = analyzer.what_if(a.image, name, a.lesion_mask, cam_method=method)
                heatmap_overlay(w.image, w.cam, 0.5)
                probability_rows(a, w)
                times[name].append((time.perf_counter() - t) * 1000)
    out = {}
    for name, ms in times.items():
        if ms:
            out[name] = {**_stats(ms), "within_target": statistics.median(ms) <= TARGET_MS,
                         "images_without_lesion": skipped[name]}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from bench.common import machine_info
    from model.inference.pipeline import Analyzer

    torch.set_num_threads(args.threads)
    os.environ.setdefault("DERMO_ENGINE_THREADS", str(args.threads))
    images = [Path(p) for p in args.images] if args.images else \
        sorted((REPO / "assets" / "examples").glob("*.jpg")) + sorted((REPO / "tests/data/fullres/images").glob("*.jpg"))
    analyzer = Analyzer.from_dir(args.models, "cpu")
    result = {"machine": machine_info(torch), "settings": {"threads": args.threads, "repeats": args.repeats,
                                                         "method": args.method, "images": len(images),
                                                         "engine": analyzer.engine.label, "target_ms": TARGET_MS,
                                                         "argv": sys.argv[1:] if argv is None else list(argv)},
              "what_if": bench(analyzer, images, args.repeats, args.method)}
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for name, s in result["what_if"].items():
        print(f"{name:18s} median {s['median_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  (n={s['n']})"
              f"{'' if s['within_target'] else '  OVER ' + str(TARGET_MS) + ' ms'}")
    print(f"load average at start {result['machine'].get('loadavg_at_start')}, "
          f"CPU busy {result['machine'].get('cpu_busy_at_start')}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
