"""Build a classifier bundle's reference set of similar confirmed cases and measure its kNN vote.

    python -m model.cli.similar build BUNDLE --data DIR [--dims 256] [--no-test]

The command line over model.aids.similar, model.aids.similar_build; the work itself is done there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from model.aids.similar import DEFAULT_DIMS, INDEX, ReferenceSetError, THUMBS
from model.cli.common import fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.cli.similar", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="(re)build the reference set of a classifier bundle from its training split")
    b.add_argument("bundle", type=Path)
    b.add_argument("--data", type=Path, required=True, help="the dataset the bundle was trained on")
    b.add_argument("--dims", type=int, default=DEFAULT_DIMS, help="PCA dimensions kept (0: all features)")
    b.add_argument("--no-test", action="store_true", help="do not measure the kNN vote on the test split")
    args = ap.parse_args(argv)
    from model.nets.bundle import BundleError, load_bundle, update_meta
    from model.data.dataset import DatasetError
    from model.aids.similar_build import build
    from model.aids.similar_eval import evaluate_knn

    try:
        bundle = load_bundle(args.bundle)
        info = build(bundle, args.data, args.dims, progress=True)
        print(f"reference set: {info['n']} training images, {info['dims']} dimensions "
              f"({info['pca_variance_kept']:.1%} of the variance), {info['bytes'] / 2**20:.1f} MB")
        if not args.no_test:
            info["test"] = evaluate_knn(bundle, args.data)
            t = info["test"]
            print(f"test: kNN vote balanced accuracy {t['knn_balanced_accuracy']:.3f} (softmax "
                  f"{t['softmax_balanced_accuracy']:.3f}), macro AUC {t['knn_macro_auc']:.3f} (softmax "
                  f"{t['softmax_macro_auc']:.3f}); precision at {t['k']} " +
                  ", ".join(f"{c} {v:.2f}" for c, v in t["precision_at_k"].items() if v is not None))
    except (BundleError, DatasetError, ReferenceSetError, FileNotFoundError) as e:
        return fail(e)
    update_meta(args.bundle, similar=info)
    print(f"written to {args.bundle / INDEX}, {args.bundle / THUMBS}; summary in meta.json (similar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
