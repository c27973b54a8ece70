"""Load on one shared Analyzer: `n` analyses at once (latency each, p95) and the peak memory of a
server process holding `sessions` sessions' results (a fresh process: streamlit imported, one
shared Analyzer as app/resources.py caches it, every session analysing at the same time and
keeping its result, as Streamlit's session state does)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

from bench.common import Clock, REPO, summarize
from bench.rendering import render


def bench_concurrent(analyzer, images: list[Path], fns, methods: Sequence[str], n: int = 4, rounds: int = 3) -> dict:
    """`n` threads, each analysing + rendering `rounds` images at the same time; per-analysis ms."""
    blobs = [p.read_bytes() for p in images]
    opts = dict(cam_methods=tuple(methods), tta=True, feature_layer=analyzer.layers[-1], segment=True)
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def work(k: int):
        start.wait()
        for r in range(rounds):
            clk = Clock("cpu")
            a = analyzer.analyze(blobs[(k + r * n) % len(blobs)], **opts)
            fm = a.feature_maps
            render(fns, a.image, a.cams, a.lesion_mask, fm.maps, fm.channels, fm.mean_activation)
            ms = clk.lap()
            with lock:
                times.append(ms)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    clk = Clock("cpu")
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = clk.lap()
    return {"concurrent": n, "analyses": len(times), "latency_ms": summarize(times),
            "analyses_per_s": round(len(times) / (wall / 1000), 2)}


MEMORY_SCRIPT = r"""
import json, sys, threading
sys.path.insert(0, sys.argv[1])
import streamlit  # noqa: F401  (the server imports it)
from model.inference.pipeline import Analyzer
from bench.common import ALL_METHODS
analyzer = Analyzer.from_dir(sys.argv[2])
blobs = [open(p, "rb").read() for p in sys.argv[4:]]
n = int(sys.argv[3])
held = [None] * n
def session(k):
    held[k] = analyzer.analyze(blobs[k % len(blobs)], cam_methods=ALL_METHODS, tta=True,
                               feature_layer=analyzer.layers[-1])
threads = [threading.Thread(target=session, args=(k,)) for k in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
status = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status")
          if l.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile"))}
print(json.dumps({"peak_rss_mb": round(status["VmHWM"] / 1024, 1), "rss_mb": round(status["VmRSS"] / 1024, 1),
                  "rss_anon_mb": round(status.get("RssAnon", 0) / 1024, 1),
                  "rss_file_mb": round(status.get("RssFile", 0) / 1024, 1), "engine": analyzer.engine.label}))
"""


def bench_memory(models: Path, images: list[Path], sessions: int = 8) -> dict:
    """Peak resident memory of a fresh process serving `sessions` analyses at once (Linux only)."""
    if not Path("/proc/self/status").exists():
        return {"sessions": sessions, "peak_rss_mb": None, "note": "needs /proc (Linux)"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(REPO), str(models), str(sessions),
                           *[str(p) for p in images]], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"sessions": sessions, **json.loads(proc.stdout.strip().splitlines()[-1])}
