"""Entry point: `streamlit run app/main.py` from the repository root.

Sets the page, adds the sidebar (model summary + disclaimer) and routes to the pages in
app/<page>/page.py, one package per page with its sections. (Not app/pages/: Streamlit treats a `pages/` folder beside the main script as a
legacy multipage app, and the first session after start-up would then bypass this router.)
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(REPO_ROOT))

# plotly looks optional libraries up in sys.modules (_plotly_utils.optional_imports.get_module), so a
# session could get a half-imported pandas while another session's thread was still importing it:
# sessions opened at once on a fresh server failed with "partially initialized module 'pandas'"
# (tests/test_load.py::test_app_sessions_in_parallel). An import statement waits for an import in
# progress, so every session imports them here, fully, before any page draws a chart.
import pandas  # noqa: E402,F401
import plotly.graph_objects  # noqa: E402,F401
import streamlit as st  # noqa: E402

from app.widgets.sidebar import render_sidebar  # noqa: E402

st.set_page_config(page_title="Dermoscopy review (research only)", page_icon="🔬", layout="wide",
                   initial_sidebar_state="expanded")

PAGES = [
    st.Page("analyse/page.py", url_path="analyse", title="Analyse", icon=":material/biotech:", default=True),
    st.Page("batch/page.py", url_path="batch", title="Batch review", icon=":material/table_view:"),
    st.Page("studies/page.py", url_path="review", title="Review study", icon=":material/rate_review:"),
    st.Page("card/page.py", url_path="model_card", title="Model card", icon=":material/fact_check:"),
    st.Page("about/page.py", url_path="about", title="About", icon=":material/info:"),
]
page = st.navigation(PAGES)
render_sidebar()
page.run()
