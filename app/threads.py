"""How the server's torch uses the CPU: its OpenMP workers sleep, rather than spin, while they wait.

A spinning worker keeps its core while the worker it waits for cannot get one. On 2 cores shared
with two training runs, classifying 1,000 tiny images (16 per forward pass, 2 torch threads) took
121 s with torch's default spin-then-sleep policy and 9 s with PASSIVE, nearly all of it in conv2d;
on the idle machine PASSIVE was no slower (single analyses slightly faster). Takes effect only
before torch is first imported, so the app calls it before loading a model.
"""
from __future__ import annotations

import os
import sys


def sleep_while_waiting() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the environment chose a policy. True when it can still
    take effect (torch not imported yet)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules
