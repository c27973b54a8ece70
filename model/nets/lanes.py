"""Run independent parts of one job on a few threads at once (the caller works too).

    pool = lanes_pool(2)                          # shared, one per lane count, made on first use
    results = run_parts(pool, 2, fn, parts)       # [fn(p) for p in parts], in order

Meant for calls that release the GIL (ONNX Runtime, OpenCV). The calling thread takes parts as
well, and helpers only ever take parts, never wait: a busy pool cannot deadlock a caller, it only
leaves more parts to the caller."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

_LOCK = threading.Lock()


class LanePool(ThreadPoolExecutor):
    """A thread pool that knows how many of its helpers have nothing queued for them."""

    def __init__(self, helpers: int, name: str):
        super().__init__(helpers, thread_name_prefix=name)
        self.helpers, self._pending, self._count = helpers, 0, threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._count:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)   # also called when it is cancelled
        return future

    def _finished(self, _future) -> None:
        with self._count:
            self._pending -= 1

    def idle(self) -> int:
        """Helpers free right now (no job running or waiting for them)."""
        return max(0, self.helpers - self._pending)


_POOLS: dict[int, LanePool] = {}


def lanes_pool(lanes: int) -> LanePool | None:
    """The process-wide helper pool for `lanes` (lanes - 1 helper threads); None for one lane."""
    if lanes <= 1:
        return None
    with _LOCK:
        if lanes not in _POOLS:
            _POOLS[lanes] = LanePool(lanes - 1, f"dermo-lane{lanes}")
        return _POOLS[lanes]


def run_parts(pool: ThreadPoolExecutor | None, lanes: int, fn: Callable, parts: Sequence) -> list:
    """[fn(p) for p in parts], with up to `lanes - 1` helpers from `pool` taking parts alongside
    the caller. An exception in any part is raised here."""
    results: list = [None] * len(parts)
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = iter(range(len(parts)))

    def work():
        while True:
            with lock:
                i = next(todo, None)
            if i is None or errors:
                return
            try:
                results[i] = fn(parts[i])
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                errors.append(e)

    helpers = [pool.submit(work) for _ in range(min(lanes, len(parts)) - 1)] if pool is not None else []
    work()
    for h in helpers:
        if not h.cancel():
            h.result()
    if errors:
        raise errors[0]
    return results


class _Deferred:
    """A job handed to a helper; `result()` runs it on the caller if no helper has started it."""

    def __init__(self, pool: ThreadPoolExecutor | None, fn: Callable):
        self.fn = fn
        self.future = pool.submit(fn) if pool is not None else None

    def result(self):
        if self.future is None or self.future.cancel():
            return self.fn()
        return self.future.result()


def submit_or_run(pool: ThreadPoolExecutor | None, fn: Callable) -> _Deferred:
    """Start `fn` on a helper of `pool` when one is free; its `result()` waits for it, or runs it
    on the calling thread when every helper was busy (never waits behind other callers' jobs)."""
    return _Deferred(pool, fn)
