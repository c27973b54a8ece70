"""A growing wait after wrong study access codes, per browser session and over the whole server.

An access code is 96 random bits, so guessing is hopeless; the wait makes it hopeless and visible
in the log too. A wrong code names no study, so the second counter is over all sessions: someone
opening fresh sessions to reset the first still meets it. Codes are never logged."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger("review.access")

FREE_TRIES = 3            # wrong codes in a row before a session waits
MAX_WAIT_S = 60.0
SERVER_WINDOW_S = 600.0   # server-wide: wrong codes in the last 10 minutes ...
SERVER_FREE = 20          # ... beyond this many, every session waits


def session_wait(failures: int) -> float:
    """Seconds to wait after `failures` wrong codes in a row: 0, 0, 0, then 1, 2, 4 ... 60."""
    return 0.0 if failures < FREE_TRIES else min(MAX_WAIT_S, 2.0 ** (failures - FREE_TRIES))


def server_wait(recent: int) -> float:
    return 0.0 if recent < SERVER_FREE else min(MAX_WAIT_S, 2.0 ** ((recent - SERVER_FREE) // 5))


class AccessLimiter:
    """Shared by every session (st.cache_resource); each session keeps its own `state` dict."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()

    def _recent(self, now: float) -> int:
        while self._failures and now - self._failures[0] > SERVER_WINDOW_S:
            self._failures.popleft()
        return len(self._failures)

    def wait(self, state: dict) -> float:
        """Seconds before this session may try a code; 0 when it may now."""
        now = self.clock()
        with self._lock:
            until = max(state.get("until", 0.0), (self._failures[-1] + server_wait(self._recent(now)))
                        if self._failures else 0.0)
        return max(0.0, until - now)

    def failed(self, state: dict, session: str) -> None:
        now = self.clock()
        state["failures"] = state.get("failures", 0) + 1
        state["until"] = now + session_wait(state["failures"])
        with self._lock:
            self._failures.append(now)
            recent = self._recent(now)
        log.warning("wrong study access code (session %s: %d in a row; server: %d in the last %d min)",
                    session, state["failures"], recent, SERVER_WINDOW_S // 60)

    @staticmethod
    def succeeded(state: dict) -> None:
        state.clear()
