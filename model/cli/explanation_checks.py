"""Checks on the explanations: randomisation sanity check, ROAD baselines, what-if stress test.

    python -m model.cli.explanation_checks BUNDLE --data DIR [--checks sanity baselines stress]
        [--cache FILE] [--faithfulness-cache FILE] [--sanity-images 200] [--time-limit SECONDS]

- sanity: CAMs of the trained model against the same model randomised from the head down, stage by
  stage (model.explain.sanity), on a seeded subset of the test split -> `interpretability.sanity`;
- baselines: ROAD of a centred blob, the U-Net's blurred lesion mask and a random map over the
  split (model.explain.baselines), and each method's paired bootstrap interval against each, from
  the faithfulness run's cached per-image scores -> `interpretability.faithfulness.baselines` and
  `.versus_baselines`;
- stress: what-ifs (model.explain.confounders) over the split -> `interpretability.stress_test`.

Per-image results go to `--cache` (JSON lines, gzip for `.gz`), tied to the weights and the
settings: a stopped run (Ctrl-C, `--time-limit`) continues where it stopped, and what is done is
written with its true n. The segmenter is the bundle's sibling `segmenter/` unless `--segmenter`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from model.cli.common import bundle_parser, fail
from model.data.dataset import DatasetError, records_for_split
from model.explain.baselines import N_BOOT, paired_differences, summarise
from model.explain.road import PERCENTILES, SEED
from model.explain.road_split import METRIC, ordered, read_cache, weights_key
from model.nets.bundle import BundleError, load_bundle, update_meta
from model.nets.classifier import feature_layers
from model.nets.weights_hash import weights_sha256

CHECKS = ("sanity", "baselines", "stress")


def parse(argv):
    ap = bundle_parser("model.cli.explanation_checks", __doc__, "classifier bundle (its split.json chooses the images)")
    ap.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS)
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--segmenter", type=Path, help="segmenter bundle (default: BUNDLE/../segmenter)")
    ap.add_argument("--cache", type=Path, help="JSON-lines file of per-image results: reused, and extended")
    ap.add_argument("--faithfulness-cache", type=Path,
                    help="the faithfulness run's per-image scores (default: BUNDLE/faithfulness-scores.jsonl.gz)")
    ap.add_argument("--sanity-images", type=int, default=200, help="seeded subset of the split for the sanity check")
    ap.add_argument("--limit", type=int, help="a seeded subset of this many images for baselines and stress")
    ap.add_argument("--shard", default="0/1", help="K/N: compute only every N-th image from the K-th (several "
                    "processes share one --cache; run once more without it to record the union)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-limit", type=float, help="seconds: start no new image after this; write what is done")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write meta.json")
    return ap.parse_args(argv)


def run_baselines(args, analyzer, records, deadline, command: str) -> tuple[dict, list[dict]]:
    from model.evaluation.explanation_checks import baseline_image, cached_rows

    b = analyzer.classifier
    grid = tuple(b.model.forward_intermediates(torch.zeros(1, 3, *b.input_size),
                                               indices=[len(feature_layers(b.model)) - 1])[1][0].shape[2:])
    key = f"{weights_key(b, PERCENTILES)}/baselines/seg{weights_sha256(analyzer.segmenter.path)[:16]}/s{args.seed}"
    rows = cached_rows(records, args.cache, key, baseline_image(analyzer, grid, args.seed), "baselines", deadline)
    base = summarise(rows)
    fcache = args.faithfulness_cache or args.bundle / "faithfulness-scores.jsonl.gz"
    method_rows = read_cache(fcache, weights_key(b, PERCENTILES)) if fcache.exists() else []
    ids = {r.image_id for r in records}
    diffs = paired_differences([r for r in method_rows if r["image"] in ids], rows, N_BOOT, args.seed)
    for name in base:
        base[name]["map"] = {"centre": "centred Gaussian blob, sigma 1/4 of each side",
                             "lesion_mask": "U-Net lesion mask, Gaussian-blurred (sigma 5% of the shorter side)",
                             "random": f"uniform noise on the {grid[0]}x{grid[1]} last-stage grid, upsampled"}[name]
    versus = {"rows": diffs, "interval": "paired percentile bootstrap 95% (images resampled)", "n_boot": N_BOOT,
              "seed": args.seed, "metric": METRIC, "percentiles": list(PERCENTILES), "split": args.split,
              "weights_sha256": weights_sha256(b.path)[:16], "command": command}
    return {"baselines": base, "versus_baselines": versus}, rows


def run_stress(args, analyzer, records, deadline, command: str) -> dict:
    from model.evaluation.explanation_checks import cached_rows, stress_image, stress_summary

    b = analyzer.classifier
    key = f"{weights_sha256(b.path)[:16]}/stress/seg{weights_sha256(analyzer.segmenter.path)[:16]}/s{args.seed}"
    rows = cached_rows(records, args.cache, key, stress_image(analyzer, args.seed), "stress", deadline)
    return {**stress_summary(rows, b.classes, N_BOOT, args.seed), "split": args.split, "split_size": len(records),
            "seed": args.seed, "score": "calibrated probabilities; top class before and after",
            "weights_sha256": weights_sha256(b.path)[:16], "command": command}


def run_sanity(args, analyzer, records, deadline, command: str) -> dict:
    from model.evaluation.explanation_checks import cached_rows, sanity_image
    from model.explain.sanity import DEPTHS_NOTE, FAIL_CORRELATION, FAIL_DEPTH, cascade, sanity_summary

    b = analyzer.classifier
    models, depths = cascade(b.model, args.seed)
    key = f"{weights_sha256(b.path)[:16]}/sanity/s{args.seed}"
    subset = ordered(records, args.sanity_images, args.seed)
    rows = cached_rows(subset, args.cache, key, sanity_image(b, models), "sanity", deadline)
    summary = sanity_summary(rows, depths)
    failing = [[m, l] for m, by_layer in summary["medians"].items() for l, med in by_layer.items()
               if len(med) >= FAIL_DEPTH and med[FAIL_DEPTH - 1] > FAIL_CORRELATION]
    return {**summary["medians"], "quartiles": summary["spread"], "depths": depths, "depth_note": DEPTHS_NOTE,
            "fail_depth": FAIL_DEPTH, "fail_correlation": FAIL_CORRELATION, "failing": failing,
            "n": len({r["image"] for r in rows}), "split": args.split, "seed": args.seed,
            "correlation": "Spearman, trained vs randomised map as shown (ReLU, min-max) at the layer's grid; "
                           "median over images",
            "weights_sha256": weights_sha256(b.path)[:16], "command": command}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    from model.inference.pipeline import Analyzer

    torch.set_num_threads(args.threads)
    command = "python -m model.cli.explanation_checks " + " ".join(argv if argv is not None else sys.argv[1:])
    deadline = time.time() + args.time_limit if args.time_limit else None
    shard = [int(v) for v in args.shard.split("/")] if args.shard.count("/") == 1 and \
        args.shard.replace("/", "").isdigit() else []
    if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
        return fail(ValueError(f"--shard {args.shard}: give K/N with 0 <= K < N, e.g. 0/2 and 1/2"))
    try:
        seg_dir = args.segmenter or args.bundle.parent / "segmenter"
        analyzer = Analyzer(load_bundle(args.bundle), load_bundle(seg_dir))
        records = ordered(records_for_split(args.bundle, args.data, args.split), args.limit, args.seed)
    except (BundleError, DatasetError, OSError) as e:
        return fail(e)
    records = records[shard[0]::shard[1]]
    current = json.loads((args.bundle / "meta.json").read_text())
    interp = dict(current.get("interpretability", {}))
    if "baselines" in args.checks:
        fields, _ = run_baselines(args, analyzer, records, deadline, command)
        for name, v in fields["baselines"].items():
            print(f"baseline {name:12s} ROAD {v['road']:+.4f} (n={v['n']})")
        for r in fields["versus_baselines"]["rows"]:
            print(f"{r['method']:10s} {r['layer']:9s} - {r['baseline']:12s} {r['difference']:+.4f} "
                  f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] n={r['n']}")
        interp["faithfulness"] = {**interp.get("faithfulness", {}), **fields}
    if "stress" in args.checks:
        interp["stress_test"] = run_stress(args, analyzer, records, deadline, command)
        for name, v in interp["stress_test"].items():
            if isinstance(v, dict):
                print(f"{name:18s} flips {v['flip_rate']:.3f}  dP(mel) {v.get('delta_mel', 0):+.4f} "
                      f"{v.get('delta_mel_ci')}  dBAcc {v.get('delta_bacc', 0):+.4f}  n={v['n']}")
    if "sanity" in args.checks:
        interp["sanity"] = run_sanity(args, analyzer, records, deadline, command)
        s = interp["sanity"]
        print(f"sanity: n={s['n']}, depths {s['depths']}; failing at depth {s['fail_depth']}: {s['failing']}")
    if not args.dry_run:
        merged = json.loads((args.bundle / "meta.json").read_text()).get("interpretability", {})  # as it is now
        for check, name in (("sanity", "sanity"), ("stress", "stress_test")):
            if check in args.checks:
                merged[name] = interp[name]
        if "baselines" in args.checks:
            merged["faithfulness"] = {**merged.get("faithfulness", {}),
                                      **{k: interp["faithfulness"][k] for k in ("baselines", "versus_baselines")}}
        update_meta(args.bundle, interpretability=merged)
    return 0


if __name__ == "__main__":
    sys.exit(main())
