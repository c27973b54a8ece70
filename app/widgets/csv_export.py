"""CSV files the app hands out, safe to open in a spreadsheet (OWASP, "CSV Injection").

File names, zip member names and labels come from uploads. A text cell that a spreadsheet would
take for a formula (first character, after any spaces, one of = + - @ tab or carriage return, or
their full-width forms) gets a leading apostrophe, which spreadsheets show as text and do not
evaluate; every text cell is quoted. Numbers stay numbers. (Streamlit's own table download and
copy, which do neither, are switched off in .streamlit/config.toml: client.disableDataExport.)
"""
from __future__ import annotations

import csv

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(value):
    """`value` with a leading apostrophe when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and (value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS)):
        return "'" + value
    return value


def safe_csv(df: pd.DataFrame) -> str:
    """df.to_csv (no index) with every header and text cell neutralised and quoted."""
    out = df.rename(columns=lambda c: neutralise(str(c)))
    text_columns = [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])]
    out[text_columns] = out[text_columns].map(neutralise)
    return out.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
