"""CSV files the app hands out, safe to open in a spreadsheet: the cells go through
model.files.neutralise, as the command line's do, and every text cell is quoted. Numbers stay
numbers. (Streamlit's own table download and copy, which do neither, are switched off in
.streamlit/config.toml: client.disableDataExport.)
"""
from __future__ import annotations

import csv

import pandas as pd

from model.files import neutralise


def safe_csv(df: pd.DataFrame) -> str:
    """df.to_csv (no index) with every header and text cell neutralised and quoted."""
    out = df.rename(columns=lambda c: neutralise(str(c)))
    text_columns = [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])]
    out[text_columns] = out[text_columns].map(neutralise)
    return out.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
