"""Benchmark: single-image analysis by stage, the naive reference side by side (with an
agreement check), batch throughput, cold start and training throughput.

    python -m bench [--models assets/models] [--repeats N] [--out bench/results/NAME.json]
                    [--markdown FILE] [--device auto|cpu|cuda] [--threads N]

See bench/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.analysis import bench_analysis, bench_batch
from bench.archive_predict import bench_archive
from bench.cold_start import bench_cold_start
from bench.concurrency import bench_concurrent, bench_memory
from bench.engines import bench_engines
from bench.input_path import bench_input_path
from bench.models import bench_models
from bench.common import ALL_METHODS, DEFAULT_IMAGE_GLOBS, REPO, find_images, log, machine_info
from bench.rendering import render_functions
from bench.report import evaluate_targets, to_markdown, write_json
from bench.training_speed import bench_training


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models",
                    help="folder with classifier/ (and segmenter/) bundles")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the image set")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--markdown", type=Path, help="also write the markdown summary to this file")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: CPU, and the GPU too when CUDA is available")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--images", nargs="*", default=list(DEFAULT_IMAGE_GLOBS), help="image files or globs")
    ap.add_argument("--max-images", type=int, help="use at most this many images")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="CAM methods, comma-separated")
    ap.add_argument("--batch-images", type=int, default=64, help="images per batch-review run")
    ap.add_argument("--batch-size", type=int, default=32, help="classify_many batch size")
    ap.add_argument("--cold-runs", type=int, default=2, help="fresh processes for the cold-start measurement")
    ap.add_argument("--train-steps", type=int, default=3, help="timed training steps per task (after 1 warm-up)")
    ap.add_argument("--train-batch", type=int, help="training batch size (default: the bundle's train_config)")
    ap.add_argument("--train-data", type=Path, default=REPO / "tests" / "data" / "ham_small",
                    help="images for the training measurement (synthetic if absent)")
    ap.add_argument("--concurrent", type=int, default=4, help="analyses at once for the load measurement")
    ap.add_argument("--sessions", type=int, default=8, help="sessions held by the memory measurement")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: "
                    "naive,torchpath,engines,batch,archive,concurrent,memory,cold,train")
    return ap.parse_args(argv)


def load_warning(machine: dict) -> str | None:
    """Why the timings may be inflated, judged from the CPUs' measured busy share over 2 s before the
    start (the load average trails by minutes, so a job that just ended still shows), else the load."""
    busy, load = machine.get("cpu_busy_at_start"), machine["loadavg_at_start"][0]
    if busy is not None:
        if busy <= 0.15:
            return None
        what = f"{busy:.0%} of the CPUs were busy just before the start (load average {load})"
    elif load > 0.5:
        what = f"load average {load} at start"
    else:
        return None
    return (f"{what}: other processes were using the CPU, so these timings are inflated (badly so when "
            "torch threads + other busy processes exceed the cores); rerun on an idle machine")


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from model.nets import tv_compat  # noqa: F401
    from model.inference.pipeline import Analyzer

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise SystemExit(f"unknown CAM methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    models = args.models if args.models.is_absolute() else (Path.cwd() / args.models)
    if not (models / "classifier" / "meta.json").is_file():
        raise SystemExit(f"No classifier bundle in {models / 'classifier'} (use --models).")
    images = find_images(args.images)[: args.max_images or None]
    if not images:
        raise SystemExit(f"No images found for {args.images}.")
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda but CUDA is not available.")
        devices = [args.device]
    results = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(torch),
               "config": {"models": str(models), "repeats": args.repeats, "images": [str(p) for p in images],
                          "methods": methods, "skip": sorted(skip), "argv": sys.argv[1:]},
               "devices": {}}
    warning = load_warning(results["machine"])
    if warning:
        results["machine"]["load_warning"] = warning
        log("WARNING: " + warning)
    log(f"benchmark: {len(images)} images x {args.repeats} repeats on {', '.join(devices)}; "
        f"{torch.get_num_threads()} torch threads; load average {results['machine']['loadavg_at_start']}")
    fns = render_functions()
    for dev in devices:
        log(f"[{dev}] loading models from {models}")
        analyzer = Analyzer.from_dir(models, dev)
        torch_path = None if "torchpath" in skip else Analyzer.from_dir(models, dev, engine="torch")
        r: dict = {"torch_threads": torch.get_num_threads(), "engine": analyzer.engine.label,
                   "engine_note": analyzer.engine.note}
        results["devices"][dev] = r
        log(f"[{dev}] networks alone: forward pass and weights size")
        r["models"] = bench_models(models, dev)
        if dev == "cpu" and "engines" not in skip:
            log(f"[{dev}] runtimes side by side: torch eager, channels_last, each installed engine")
            r["engines"] = bench_engines(models, args.threads or torch.get_num_threads(), max(6, 4 * args.repeats))
        if dev == "cpu":
            log(f"[{dev}] the one input path, per image")
            r["input_path"] = bench_input_path(models, images, args.repeats)
        log(f"[{dev}] single-image analysis (engine path{'' if torch_path is None else ', torch path'}"
            f"{'' if 'naive' in skip else ', naive'}, interleaved)")
        r["analysis"] = bench_analysis(analyzer, models, images, max(1, args.repeats), methods, dev, fns,
                                       naive="naive" not in skip, torch_analyzer=torch_path)
        del torch_path
        if "concurrent" not in skip:
            log(f"[{dev}] {args.concurrent} analyses at once on one shared Analyzer")
            r["concurrent"] = bench_concurrent(analyzer, images, fns, methods, args.concurrent, max(1, args.repeats))
        if dev == "cpu" and "memory" not in skip:
            log(f"[{dev}] server memory with {args.sessions} sessions (fresh process)")
            r["memory"] = bench_memory(models, images, args.sessions)
        if "batch" not in skip:
            log(f"[{dev}] batch review throughput")
            r["batch"] = bench_batch(analyzer, images, args.batch_images, args.batch_size, args.repeats, dev)
        if "archive" not in skip:
            log(f"[{dev}] archive prediction throughput (python -m model.cli.predict on a zip)")
            r["archive_predict"] = bench_archive(models, images, args.batch_images, args.batch_size,
                                                 max(1, args.repeats // 2), dev)
        if "cold" not in skip:
            log(f"[{dev}] cold start")
            r["cold_start"] = bench_cold_start(models, images[0], dev, methods, args.cold_runs)
        if "train" not in skip:
            r["training"] = {}
            for part in ("classifier", "segmenter"):
                if (models / part / "meta.json").is_file():
                    log(f"[{dev}] training throughput: {part}")
                    r["training"][part] = bench_training(models / part, dev, args.train_steps, args.train_batch,
                                                         args.train_data)
        del analyzer
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = evaluate_targets(results)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from app.threads import sleep_while_waiting

    sleep_while_waiting()  # as the app does before torch's first import (OMP_WAIT_POLICY=PASSIVE)
    results = run_benchmark(args)
    md = to_markdown(results)
    write_json(args.out, results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
    print(md)
    log(f"results written to {args.out}" + (f" and {args.markdown}" if args.markdown else ""))
    agree = results["devices"].get("cpu", results["devices"].get("cuda", {})).get("analysis", {}).get("agreement")
    if agree and not agree["ok"]:
        log("WARNING: the fast and naive pipelines disagree; see 'agreement' in the JSON.")
        return 1
    return 0
