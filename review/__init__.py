"""Review studies: storage only (schema, migrations, queries). A database URL in, plain rows out.

No Streamlit and no machine learning here: the Review page calls `Store`, the statistics come
from `review.stats`, and nothing here renders. SQL is written here only, with bound parameters.
"""
from review.errors import SchemaTooNew, StoreError
from review.store import Store, open_store
from review.url import database_url

__all__ = ["Store", "StoreError", "SchemaTooNew", "database_url", "open_store"]
