"""Where the review database lives: one URL, as Streamlit's `st.connection` and SQLAlchemy take it.

Looked up in this order:
1. the environment variable `DERMO_REVIEW_DB` (e.g. `sqlite:////srv/review.sqlite3`);
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
    return url if isinstance(url, str) and url.strip() else None


def database_url(secrets_file: Path | None = None) -> str:
    """The review database URL (see the module docstring for the order)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    found = _from_secrets(secrets_file or REPO_ROOT / ".streamlit" / "secrets.toml")
    return found or f"sqlite:///{DEFAULT_PATH}"


def describe(url: str) -> str:
    """The URL without a password, for showing where the data is."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "(unparseable URL)"
