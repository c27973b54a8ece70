"""The commands (`python -m model.cli.NAME`): argument parsing and printing over the library.

No library module imports from here (tests/test_architecture.py holds that rule).
"""
