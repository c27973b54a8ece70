"""Rebuild both aids of a classifier bundle (similar cases, conformal sets) in one pass over its split.

    python -m model.cli.references BUNDLE --data DIR [--dims 256]

The command line over model.aids.references; the work itself is done there.
"""
from __future__ import annotations

import sys
from typing import Sequence

from model.aids.references import build_all
from model.aids.similar import DEFAULT_DIMS
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.references", __doc__, "classifier bundle folder (with split.json)",
                       "the dataset the bundle was trained on")
    ap.add_argument("--dims", type=int, default=DEFAULT_DIMS, help="PCA dimensions of the reference set (0: all)")
    args = ap.parse_args(argv)
    from model.nets.bundle import BundleError, load_bundle
    from model.data.dataset import DatasetError

    try:
        build_all(load_bundle(args.bundle), args.data, dims=args.dims)
    except (BundleError, DatasetError, ValueError) as e:
        return fail(e)
    print(f"written: {args.bundle}/similar*.safetensors, meta.json (conformal, similar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
