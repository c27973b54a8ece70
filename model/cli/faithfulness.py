"""ROAD faithfulness over a split, per CAM method and layer, written into the bundle's model card.

    python -m model.cli.faithfulness BUNDLE --data DIR [--split test] [--limit N] [--workers 2] [--cache FILE]

The command line over model.explain.road_split; the work itself is done there.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from model.data.dataset import DatasetError
from model.explain.cams import CAM_METHODS
from model.explain.road import PERCENTILES, SEED
from model.explain.road_split import METRIC, aggregate, compute, coverage, markdown_table, merged_rows, ordered
from model.nets.bundle import BundleError, load_bundle, update_meta
from model.nets.classifier import feature_layers
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.faithfulness", __doc__, "classifier bundle (its split.json chooses the images)",
                       "dataset folder (masks give the heat-in-lesion share)")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--methods", nargs="+", default=list(CAM_METHODS), choices=list(CAM_METHODS))
    ap.add_argument("--layers", nargs="+", help="layer names (default: every stage the app offers)")
    ap.add_argument("--limit", type=int, help="a fixed seeded subset of this many images (default: all)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--workers", type=int, default=1, help="processes to split the images over (one thread each)")
    ap.add_argument("--cache", type=Path, help="JSON-lines file of per-image scores: reused, and extended")
    ap.add_argument("--time-limit", type=float, help="seconds: start no new image after this; write what is done")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write meta.json")
    args = ap.parse_args(argv)
    from model.data.dataset import records_for_split

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bundle = load_bundle(args.bundle)
        names = feature_layers(bundle.model)
        layers = args.layers or names
        unknown = [l for l in layers if l not in names]
        if unknown:
            raise BundleError(f"unknown layers {unknown}; this model has {names}")
        all_records = records_for_split(args.bundle, args.data, args.split)
        records = ordered(all_records, args.limit, args.seed)
        start = time.perf_counter()
        rows = aggregate(compute(bundle, records, args.methods, layers, PERCENTILES, args.workers, args.cache,
                                 args.time_limit))
    except (BundleError, DatasetError) as e:
        return fail(e)
    if not rows:
        print("error: no image was scored (time limit too short, or no readable image)", file=sys.stderr)
        return 1
    for r in sorted(rows, key=lambda r: -r["road"]):
        print(f"{r['method']:10s} {r['layer']:10s} ROAD {r['road']:+.4f}  MoRF {r['morf']:+.4f}  LeRF {r['lerf']:+.4f}  "
              f"heat in lesion {r['heat_in_lesion'] if r['heat_in_lesion'] is not None else '-'}  (n={r['n']})")
    current = json.loads((args.bundle / "meta.json").read_text())  # as it is now, not as loaded
    old = current.get("interpretability", {}).get("faithfulness")
    split_hash = bundle.meta.get("split", {}).get("hash")
    same = bool(old) and (old.get("split"), old.get("split_hash"), old.get("percentiles"), old.get("metric")) \
        == (args.split, split_hash, list(PERCENTILES), METRIC)
    new_rows = rows
    rows = merged_rows(old, rows, same)
    kept_old = len(rows) > len(new_rows)  # the earlier commands still stand behind some rows
    command = "python -m model.cli.faithfulness " + " ".join(argv if argv is not None else sys.argv[1:])
    fig = {"metric": METRIC, "percentiles": list(PERCENTILES), "score": "calibrated probability of the top class",
           "split": args.split, "n_images": max(r["n"] for r in rows), "split_size": len(all_records),
           "subset": coverage(rows, len(all_records), args.split), "seed": args.seed,
           "split_hash": split_hash, "arch": bundle.meta["arch"], "created": bundle.meta.get("created"),
           "seconds": round(time.perf_counter() - start, 1),
           "commands": ((old.get("commands") or [old.get("command")]) if kept_old else []) + [command],
           "command": command, "rows": rows}
    fig["commands"] = [c for c in dict.fromkeys(fig["commands"]) if c]
    fig.update(kept_baselines(old, bundle))
    print("\n" + markdown_table(rows, names) + "\n")
    print(f"{fig['n_images']} of {len(all_records)} {args.split} images"
          + (f"; {fig['subset']}" if fig["subset"] else "") + f" ({fig['seconds']} s)")
    if not args.dry_run:
        update_meta(args.bundle, interpretability={**current.get("interpretability", {}), "faithfulness": fig})
    return 0


def kept_baselines(old: dict | None, bundle) -> dict:
    """The baselines beside the ROAD figures (model.cli.explanation_checks), kept while they belong to
    these weights: their paired intervals reuse this run's per-image cache."""
    from model.nets.weights_hash import weights_sha256

    versus = (old or {}).get("versus_baselines") or {}
    if not versus or versus.get("weights_sha256") != weights_sha256(bundle.path)[:16]:
        return {}
    return {k: old[k] for k in ("baselines", "versus_baselines") if k in old}


if __name__ == "__main__":
    sys.exit(main())
