"""Files written so that a reader never sees half of one: `atomic_write`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], object], mode: int = 0o644) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A crash mid-write leaves the old file (or none), never a partial one; the temporary file is
    removed whatever happens. `mode` (mkstemp makes 0600): the app may run as another user than
    the one who trained the model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
