"""Where the review database lives: one URL, as Streamlit's `st.connection` and SQLAlchemy take it.

Looked up in this order:
1. the environment variable `DERMO_REVIEW_DB`: a URL (`sqlite:////srv/review.sqlite3`,
   `postgresql+psycopg://...`) or a plain file path (`/srv/review.sqlite3`, taken as SQLite);
2. `.streamlit/secrets.toml` beside the app, `[connections.review] url = "..."`;
3. the default: `sqlite:///<repo>/data/review.sqlite3` (the `data/` folder is git-ignored).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "DERMO_REVIEW_DB"
DEFAULT_PATH = REPO_ROOT / "data" / "review.sqlite3"


def _from_secrets(path: Path) -> str | None:
    try:
        secrets = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    url = secrets.get("connections", {}).get("review", {}).get("url")
    return as_url(url.strip()) if isinstance(url, str) and url.strip() else None


def as_url(value: str) -> str:
    """A database URL as it is, or a plain file path as the SQLite URL of that file (absolute)."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def database_url(secrets_file: Path | None = None) -> str:
    """The review database URL (see the module docstring for the order)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return as_url(env)
    found = _from_secrets(secrets_file or REPO_ROOT / ".streamlit" / "secrets.toml")
    return found or f"sqlite:///{DEFAULT_PATH}"


def describe(url: str) -> str:
    """The URL without a password, for showing where the data is."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "(unparseable URL)"
