"""Score a bundle on a dataset split: metrics, JSON and an HTML report with plotly figures.

An external set with its own parts (Derm7pt's metadata.csv: image_id, dx, part; empty dx skipped) is
scored on its `report` part by default, through the app's own batch path: balanced accuracy over its
classes, melanoma AUC, the melanoma flag, prediction-set coverage and the quality gate
(model.evaluation.external); `--record` stores that as metrics.external.<name>.

    python -m model.cli.evaluate BUNDLE --data DIR [--split test|val|train|all] [--json OUT] [--html OUT]
    python -m model.cli.evaluate isic --truth GT.csv --pred PRED.csv    (ISIC scoring, no model: model.cli.isic)

The command line over model.evaluation.evaluate; the work itself is done there.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from model.data.dataset import DatasetError, has_parts, load_dataset, records_for_split
from model.evaluation.evaluate import evaluate_classifier, evaluate_segmenter, headline, report_html
from model.evaluation.external import external_report
from model.inference.pipeline import Analyzer
from model.nets.bundle import BundleError, load_bundle, update_meta
from model.cli.common import bundle_parser, fail


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["isic"]:
        from model.cli.isic import main as isic_main

        return isic_main(argv[1:])
    ap = bundle_parser("model.cli.evaluate", __doc__, "classifier or segmenter bundle folder",
                       "dataset folder (any supported layout)")
    ap.add_argument("--split", choices=("test", "val", "train", "all", "select", "report"),
                    help="default: test (an external set with parts: report)")
    ap.add_argument("--name", help="with an external set: the key under metrics.external (default: the folder name)")
    ap.add_argument("--json", type=Path, help="write the full metrics here")
    ap.add_argument("--html", type=Path, help="HTML report (default: BUNDLE/evaluation-SPLIT.html)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--record", action="store_true",
                    help="write the figures into BUNDLE/meta.json as metrics.<split> (what the model card shows)")
    args = ap.parse_args(argv)
    from model.nets.forward import pick_device

    try:
        bundle = load_bundle(args.bundle, pick_device(args.device))
        ds = load_dataset(args.data)
        if has_parts(ds):
            return external(args, bundle, ds)
        args.split = args.split or "test"
        records = records_for_split(args.bundle, ds, args.split)
        run = evaluate_classifier if bundle.task == "classify" else evaluate_segmenter
        report = run(bundle, records, progress=sys.stderr.isatty())
    except (BundleError, DatasetError) as e:
        return fail(e)
    report["split"] = args.split
    for k, v in headline(report).items():
        print(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} unreadable images, e.g. {report['skipped'][:3]}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.record:
        metrics = dict(bundle.meta.get("metrics") or {})
        metrics[args.split] = {k: v for k, v in report.items() if k not in ("per_image_dice", "split")}
        update_meta(args.bundle, metrics=metrics)
        print(f"recorded as metrics.{args.split} in {args.bundle / 'meta.json'}")
    html_path = args.html or args.bundle / f"evaluation-{args.split}.html"
    html_path.write_text(report_html(bundle, report, args.split))
    print(f"report: {html_path}")
    return 0


def external(args, bundle, ds) -> int:
    """An external set with parts, through the app's batch path (model.evaluation.external)."""
    if bundle.task != "classify":
        raise BundleError("An external set is scored with a classifier bundle.")
    split = args.split or "report"
    records = records_for_split(args.bundle, ds, split)
    rep = external_report(Analyzer(bundle), records)
    rep.update(part=split, data=str(args.data), command="python -m model.cli.evaluate " + " ".join(sys.argv[1:]))
    for k in ("n", "balanced_accuracy", "macro_auc_present", "melanoma_auc", "melanoma_top_class_sensitivity",
              "melanoma_flag_sensitivity", "melanoma_flag_specificity"):
        v = rep.get(k)
        print(f"{k:>32}: {v:.4f}" if isinstance(v, float) else f"{k:>32}: {v}")
    g, sets = rep["gate"], rep["sets"]
    print(f"{'gate':>32}: {g['flagged']} of {rep['n']} flagged; error rate flagged {g['error_rate_flagged']}, "
          f"passed {g['error_rate_passed']}")
    print(f"{'prediction sets':>32}: coverage {sets.get('coverage')} at {sets['coverage_level']}%, mean size "
          f"{sets.get('mean_set_size')}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rep, indent=1))
    if args.record:
        metrics = dict(bundle.meta.get("metrics") or {})
        name = args.name or f"{Path(args.data).resolve().name}_{split}"
        metrics["external"] = {**(metrics.get("external") or {}), name: rep}
        update_meta(args.bundle, metrics=metrics)
        print(f"recorded as metrics.external.{name} in {args.bundle / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
