"""A real `streamlit run app/main.py` on a local port, for the browser tests, the page-latency bench and
the hostile replay: one way to start it, wait for its health check, and stop it.

    with serving({"DERMO_MODELS_DIR": "assets/models"}, Path("streamlit.log")) as url:
        ...   # drive `url` with a browser
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


class ServerError(RuntimeError):
    """The server exited or never answered its health check; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, env: dict[str, str], log: Path, timeout_s: float = START_TIMEOUT_S) -> subprocess.Popen:
    """The app on 127.0.0.1:`port` with `env` added to this process's environment, its output appended
    to `log`; returns once it answers its health check, else ServerError."""
    env = {**os.environ, **env}
    with open(log, "a") as out:  # the child keeps its own copy of the file descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    why = "exited" if proc.poll() is not None else f"did not answer in {timeout_s:.0f} s"
    stop(proc)
    raise ServerError(f"streamlit {why}: {Path(log).read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate, and kill after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, timeout_s: float = START_TIMEOUT_S):
    """A server at a free port for the block; yields its URL. (A caller that needs the process, to kill
    and restart it or read its memory, uses start and stop.)"""
    port = free_port()
    proc = start(port, env, log, timeout_s)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
