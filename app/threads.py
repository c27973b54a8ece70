"""How the server's torch uses the CPU: its OpenMP workers sleep, rather than spin, while they wait.

A spinning worker keeps its core while the worker it waits for cannot get one. On 2 cores shared
with two training runs that made Batch review of 1,000 tiny images take 121 s instead of 9 s (torch's
default spin-then-sleep policy, 2 threads; measured with `python -m tools.batch_review --profile`).
Takes effect only before torch is first imported, so the app calls it before loading a model.
"""
from __future__ import annotations

import os
import sys


def sleep_while_waiting() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the environment chose a policy. True when it can still
    take effect (torch not imported yet)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules
