"""Export a bundle's network to ONNX beside its weights, tied to them by hash.

    python -m model.cli.onnx_export BUNDLE [BUNDLE ...]

The command line over model.nets.onnx_export; the work itself is done there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from model.nets.bundle import BundleError
from model.nets.onnx_export import export_bundle
from model.nets.weights_hash import weights_sha256


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.cli.onnx_export", description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="bundle folders (classifier or segmenter)")
    args = ap.parse_args(argv)
    status = 0
    for b in args.bundles:
        try:
            path = export_bundle(b)
        except (BundleError, OSError) as e:
            print(f"{b}: error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, weights sha256 {weights_sha256(b)[:16]}")
    return status


if __name__ == "__main__":
    sys.exit(main())
