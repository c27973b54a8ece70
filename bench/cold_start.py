"""Cold start: a fresh Python process from interpreter start to the first full analysis."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.common import REPO, log

COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[5]))  # the same thread count as the parent benchmark
from model.inference.pipeline import Analyzer
from model.explain.cams import CAM_METHODS
t1 = time.perf_counter()
streamlit_s = None
try:
    import streamlit  # the app imports it too
    streamlit_s = time.perf_counter() - t1
except ImportError:
    pass
t2 = time.perf_counter()
analyzer = Analyzer.from_dir(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
data = open(sys.argv[3], "rb").read()
a = analyzer.analyze(data, cam_methods=tuple(sys.argv[4].split(",")), tta=True,
                     feature_layer=analyzer.layers[-1], segment=True)
t4 = time.perf_counter()
print("COLD " + json.dumps({"import_s": t1 - t0, "import_streamlit_s": streamlit_s, "load_s": t3 - t2,
                            "first_analysis_s": t4 - t3, "top_class": a.top_class,
                            "torch_threads": torch.get_num_threads()}), flush=True)
"""


def bench_cold_start(models_dir: Path, image: Path, device: str, methods: Sequence[str], runs: int) -> dict:
    import torch

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    for r in range(max(1, runs)):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", COLD_SCRIPT, str(models_dir), device, str(image),
                                 ",".join(methods), str(torch.get_num_threads())],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line, wall = None, None
        for ln in proc.stdout:  # the first result is there when its line arrives, not when the process exits
            if ln.startswith("COLD "):
                line, wall = ln.strip(), time.perf_counter() - start
        err = proc.stderr.read()
        proc.wait(timeout=600)
        exit_s = time.perf_counter() - start
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"cold-start subprocess failed ({proc.returncode}): {err[-2000:]}")
        row = json.loads(line[5:])
        row["process_wall_s"] = wall        # interpreter start to the first full result
        row["process_exit_s"] = exit_s      # ... and on to the end of the process (teardown included)
        rows.append(row)
        log(f"  [{device}] cold start {r + 1}/{max(1, runs)}: {wall:.2f} s to first result "
            f"(import {row['import_s']:.2f}, load {row['load_s']:.2f}, first analysis {row['first_analysis_s']:.2f})")
    keys = ("process_wall_s", "process_exit_s", "import_s", "import_streamlit_s", "load_s", "first_analysis_s")
    out = {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys if all(r[k] is not None for r in rows)}
    out.update(runs=len(rows), image=image.name, note="fresh `python` process: interpreter start, imports, "
               "model load and the first full analysis; the OS file cache is warm")
    return out
