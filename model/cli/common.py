"""The opening every bundle + dataset command shares: its parser, and one way to refuse."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BUNDLE_HELP = "classifier bundle folder (with split.json)"
DATA_HELP = "the dataset the bundle was trained on (any supported layout)"


def bundle_parser(module: str, doc: str | None, bundle_help: str = BUNDLE_HELP,
                  data_help: str = DATA_HELP) -> argparse.ArgumentParser:
    """`python -m MODULE BUNDLE --data DIR ...`: the parser with those two arguments; the first
    line of the command's docstring is its description."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").strip().split("\n")[0])
    ap.add_argument("bundle", type=Path, help=bundle_help)
    ap.add_argument("--data", type=Path, required=True, help=data_help)
    return ap


def fail(error: BaseException) -> int:
    """Say what went wrong (the message is written for the user), on stderr; exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return 2
