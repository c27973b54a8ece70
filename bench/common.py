"""Small shared pieces of the benchmark: paths, the CAM method list, logging, summaries,
machine description, image discovery and a device-aware clock."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from model.nets.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE_GLOBS = ("assets/examples/*.jpg", "tests/data/fullres/images/*.jpg")
ALL_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarize(values: Sequence[float]) -> dict:
    """median / p95 / mean / min / max of a list of milliseconds (or any numbers)."""
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return {"n": 0, "median": None, "p95": None, "mean": None, "min": None, "max": None}
    r = lambda x: round(float(x), 2)  # noqa: E731
    return {"n": int(v.size), "median": r(np.median(v)), "p95": r(np.percentile(v, 95)), "mean": r(v.mean()),
            "min": r(v.min()), "max": r(v.max())}


def cpu_busy_share(seconds: float = 2.0) -> float | None:
    """Share of all CPUs' time spent busy over the next `seconds` (Linux /proc/stat; None elsewhere).
    What other processes do right now, unlike the load average, which trails by minutes."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]    # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


def machine_info(torch) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    info = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "platform": platform.platform(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_busy_at_start": cpu_busy_share(), "gpu": None,
    }
    try:
        import cv2
        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def find_images(patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_file():
            out.append(p)
            continue
        base = REPO if not p.is_absolute() else Path("/")
        out.extend(sorted(base.glob(str(p).lstrip("/"))))
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


class Clock:
    """perf_counter laps that wait for the GPU first, so GPU work is charged to its stage."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.t = time.perf_counter()

    def lap(self) -> float:
        if self.cuda:
            import torch
            torch.cuda.synchronize()
        now = time.perf_counter()
        ms = (now - self.t) * 1000
        self.t = now
        return ms
