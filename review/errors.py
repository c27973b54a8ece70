"""The storage package's errors: each message says what happened and what to do next."""
from __future__ import annotations


class StoreError(Exception):
    """The review database cannot be used as asked (bad URL, unreadable file, missing row)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer version of the app; it is left untouched."""
