"""Files the project writes: never half of one (`atomic_write`), and CSV safe to open in a
spreadsheet (`neutralise`, `safe_csv_writer`; OWASP, "CSV Injection").

File names, zip member names and labels come from uploads. A text cell that a spreadsheet would take
for a formula (its first character, after any spaces, one of = + - @ tab, carriage return or line
feed, or their full-width forms) gets a leading apostrophe, which spreadsheets show as text and do
not evaluate. Every CSV the project writes, the app's downloads and the command line's, goes through
`neutralise`."""
from __future__ import annotations

import csv
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Callable, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def clean_name(name: str) -> str:
    """A file name as shown and written: formatting characters removed (the right-to-left override
    and the other bidirectional controls, zero-width characters), control characters (newline, tab)
    replaced by U+FFFD. The original goes in a field of its own wherever it differs."""
    return "".join("\ufffd" if unicodedata.category(ch) == "Cc" else ch
                   for ch in str(name) if unicodedata.category(ch) != "Cf")


def printable(name: str) -> str:
    """A name safe to print on one terminal line: control and formatting characters (newlines, the
    right-to-left override) written as escapes, so a file name cannot forge or reverse a line."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf") else ch
                   for ch in str(name))


def neutralise(value: Any) -> Any:
    """`value` with a leading apostrophe when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and (value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS)):
        return "'" + value
    return value


class SafeCsvWriter:
    """csv.writer whose rows have every text cell neutralised (numbers stay numbers)."""

    def __init__(self, stream: TextIO, **kwargs):
        self._writer = csv.writer(stream, lineterminator="\n", **kwargs)

    def writerow(self, row) -> None:
        self._writer.writerow([neutralise(v) for v in row])


def safe_csv_writer(stream: TextIO, **kwargs) -> SafeCsvWriter:
    return SafeCsvWriter(stream, **kwargs)


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
