"""What machine code runs on, for the records that training and benchmarks keep (torch only when asked
about a device)."""
from __future__ import annotations

import os
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


def hardware_summary(device) -> str:
    """'NVIDIA H100 ... (CUDA 12.x)' or 'CPU (AMD EPYC), 2 cores, 1 torch threads' for a torch device."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({cpu_model()}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
