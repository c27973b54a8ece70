"""Benchmarks of the analysis pipeline against a naive reference (`python -m bench`)."""
