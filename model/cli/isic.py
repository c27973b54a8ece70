"""Score ISIC-form predictions against ISIC-form ground truth, without a model.

    python -m model.cli.evaluate isic --truth GT.csv --pred PRED.csv [--json OUT]
    python -m model.cli.evaluate isic --truth-masks DIR --pred-masks DIR [--json OUT]
    python -m model.cli.evaluate isic --write-truth DATA --truth GT.csv   (a labelled folder as Task 3 truth)

The command line over model.data.isic; the work itself is done there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from model.data.isic import IsicFormatError, score_task1, score_task3, summary_lines, write_truth_csv
from model.cli.common import fail


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.cli.evaluate isic",
                                 description="Score ISIC-form predictions against ISIC-form ground truth (no model).")
    ap.add_argument("--truth", type=Path, help="Task 3 ground-truth CSV (image,MEL,NV,...)")
    ap.add_argument("--pred", type=Path, help="Task 3 predictions CSV (python -m model.cli.predict --format isic2018)")
    ap.add_argument("--truth-masks", type=Path, help="Task 1 ground-truth folder of <image>_segmentation.png")
    ap.add_argument("--pred-masks", type=Path, help="Task 1 predicted masks (python -m model.cli.predict --masks DIR)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--write-truth", type=Path, metavar="DATA",
                    help="instead of scoring: write DATA's labels (any supported layout) as a Task 3 truth CSV to --truth")
    args = ap.parse_args(argv)
    if args.write_truth:
        if not args.truth:
            ap.error("--write-truth DATA needs --truth OUT.csv")
        from model.data.dataset import DatasetError

        try:
            n = write_truth_csv(args.write_truth, args.truth)
        except (DatasetError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{n} images written to {args.truth}")
        return 0
    if bool(args.truth) != bool(args.pred) or bool(args.truth_masks) != bool(args.pred_masks) or not (
            args.truth or args.truth_masks):
        ap.error("give --truth with --pred (Task 3), and/or --truth-masks with --pred-masks (Task 1)")
    reports = []
    try:
        if args.truth:
            reports.append(score_task3(args.truth, args.pred))
        if args.truth_masks:
            reports.append(score_task1(args.truth_masks, args.pred_masks))
    except (IsicFormatError, OSError) as e:
        return fail(e)
    for r in reports:
        print("\n".join(summary_lines(r)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports[0] if len(reports) == 1 else reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
