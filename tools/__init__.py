"""Measuring scripts (run as `python -m tools.NAME`)."""
