"""Set the heat warning from a split: per CAM method, the 90th percentile of the share of heat off the
lesion, through the app's own path (model.evaluation.heat_warning says why).

    python -m model.cli.heat_warning BUNDLE --data DIR [--segmenter DIR] [--split test] [--limit N]

BUNDLE is the classifier; the segmenter defaults to BUNDLE/../segmenter. Written to BUNDLE/meta.json
as `interpretability.heat_warning`, with n, the split and this command; the Analyse page reads it.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from model.cli.common import bundle_parser, fail
from model.data.dataset import DatasetError, records_for_split
from model.evaluation.heat_warning import heat_by_method, warning_limits
from model.inference.pipeline import Analyzer
from model.nets.bundle import BundleError, load_bundle, read_meta, update_meta


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.heat_warning", __doc__)
    ap.add_argument("--segmenter", type=Path, help="segmenter bundle (default: BUNDLE/../segmenter)")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--limit", type=int, help="only the first N images of the split (a quick look; not stored)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    seg_dir = args.segmenter or args.bundle.parent / "segmenter"
    try:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        records = [r for r in records_for_split(args.bundle, args.data, args.split) if r.image_path is not None]
        records = records[:args.limit] if args.limit else records
        analyzer = Analyzer(load_bundle(args.bundle), load_bundle(seg_dir))
        t0 = time.time()
        per_image = heat_by_method(analyzer, records, progress=_progress if sys.stderr.isatty() else None)
        fig = warning_limits(per_image, analyzer.layers[-1])
    except (BundleError, DatasetError, OSError) as e:
        return fail(e)
    for m, r in fig["per_method"].items():
        print(f"{m:10s} n={r['n']}  off the lesion: median {r['off_lesion_median']:.3f}, "
              f"90th percentile {r['off_lesion_p90']:.3f}; on artefacts: mean {r['artefacts_mean']:.3f}")
    if args.limit:
        print("--limit: not written to meta.json")
        return 0
    meta = read_meta(args.bundle)
    fig.update(split=args.split, split_hash=meta.get("split", {}).get("hash"), created=meta.get("created"),
               seconds=round(time.time() - t0, 1), command="python -m model.cli.heat_warning " + shlex.join(
                   [str(a) for a in (argv if argv is not None else sys.argv[1:])]))
    update_meta(args.bundle, interpretability={**meta.get("interpretability", {}), "heat_warning": fig})
    return 0


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
