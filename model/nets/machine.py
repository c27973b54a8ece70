"""What machine code runs on, for the records that training and benchmarks keep (no torch here)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name ('AMD EPYC', 'Intel(R) Xeon(R) ...') from /proc/cpuinfo, else what
    the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
