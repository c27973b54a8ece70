"""The Review page's one store per server process (st.cache_resource), with a clear message and
a next step when the database cannot be used."""
from __future__ import annotations

import streamlit as st

from app.widgets.components import md_escape
from app.studies.access import AccessLimiter
from review import Store, StoreError, database_url


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(url: str) -> Store:
    return Store(url)


def get_store() -> Store:
    """The migrated store at the configured URL, or an explanation and st.stop()."""
    try:
        return _store(database_url())
    except StoreError as e:
        st.error(f"The review database cannot be used: {md_escape(e, 800)}", icon=":material/database:")
        st.caption("Set DERMO_REVIEW_DB (e.g. sqlite:///data/review.sqlite3) or [connections.review] url in "
                   ".streamlit/secrets.toml; the README's 'Review studies' section explains both.")
        st.stop()


@st.cache_resource(show_spinner=False)
def get_limiter() -> AccessLimiter:
    """The wrong-access-code counter over all sessions of this server."""
    return AccessLimiter()
