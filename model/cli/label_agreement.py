"""Measure the artefact detector and the colour rules against labels set by eye.

    python -m model.cli.label_agreement BUNDLE [--labels tests/data/labelled] [--derm7pt DIR] [--dry-run]

Per artefact kind: precision and recall of the detector's image-level call; per dermoscopic colour:
sensitivity, specificity and balanced accuracy of `colour_variegation`'s rule inside the labelled
image's own lesion mask; each on the `tune` part (the rules were set on it), the `holdout` part (never
tuned on) and all. Written to BUNDLE/meta.json as `rule_agreement` (the model card shows it) with n,
the labels' sha256 and this command, unless --dry-run.

--derm7pt DIR adds dermatologists' labels from another clinic: the white and blue-gray the app shows
for each Derm7pt image (its own path and outline, the segmenter at BUNDLE/../segmenter) against the
regression structures and blue-whitish veil Derm7pt scores, per part (`derm7pt` in the record).
"""
from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from pathlib import Path
from typing import Sequence

from model.cli.common import fail
from model.data.dataset import DatasetError, load_dataset
from model.evaluation.label_agreement import (EXTERNAL_COLOUR_LABELS, artefact_agreement, colour_agreement,
                                              external_colour_agreement, load_labelled)
from model.nets.bundle import BundleError, read_meta, update_meta

DEFAULT_LABELS = Path("tests/data/labelled")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.cli.label_agreement", description=__doc__.strip().split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle whose meta.json records the figures")
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="folder with labels.csv, images/ and masks/")
    ap.add_argument("--derm7pt", type=Path, help="Derm7pt folder: also score white and blue-gray against its "
                                                 "dermatologists' structure labels")
    ap.add_argument("--segmenter", type=Path, help="segmenter bundle for --derm7pt (default: BUNDLE/../segmenter)")
    ap.add_argument("--dry-run", action="store_true", help="print; do not write meta.json")
    args = ap.parse_args(argv)
    try:
        read_meta(args.bundle)
        cases = load_labelled(args.labels)
        external = derm7pt_agreement(args) if args.derm7pt else None
    except (BundleError, DatasetError, OSError, ValueError, KeyError) as e:
        return fail(e if not isinstance(e, KeyError) else ValueError(f"labels.csv lacks the column {e}"))
    fig = {"artefacts": artefact_agreement(cases), "colours": colour_agreement(cases),
           "n_images": len(cases), "n_colour_labelled": sum(c.colours is not None for c in cases),
           "labels": str(args.labels), "labels_sha256": hashlib.sha256((args.labels / "labels.csv").read_bytes()).hexdigest()[:16],
           "command": "python -m model.cli.label_agreement " + shlex.join(
               [str(a) for a in (argv if argv is not None else sys.argv[1:])])}
    for what in ("artefacts", "colours"):
        for part in ("tune", "holdout", "all"):
            cells = "  ".join(f"{k} {_cell(v, what)}" for k, v in fig[what][part].items())
            print(f"{what:9s} {part:7s} {cells}")
    if external:
        fig["derm7pt"] = external
        for part, row in external["parts"].items():
            cells = "  ".join(f"{k} {_cell(v, 'colours')} sens {v['sensitivity']} spec {v['specificity']}"
                              for k, v in row.items())
            print(f"derm7pt   {part:7s} {cells}")
    if not args.dry_run:
        update_meta(args.bundle, rule_agreement=fig)
    return 0


def derm7pt_agreement(args) -> dict:
    """White and blue-gray as the app shows them for each Derm7pt image, against its structure labels."""
    from model.inference.pipeline import Analyzer   # torch, only for this option
    from model.nets.bundle import load_bundle

    records = [r for r in load_dataset(args.derm7pt).records if r.image_path is not None]
    analyzer = Analyzer(load_bundle(args.bundle), load_bundle(args.segmenter or args.bundle.parent / "segmenter"))

    def colours_of(record) -> set[str]:
        m = analyzer.analyze(str(record.image_path), cam_methods=("gradcam",), segment=True).measurements
        return set(m.colours) if m is not None else set()

    parts = external_colour_agreement(records, colours_of, progress=_progress if sys.stderr.isatty() else None)
    return {"parts": parts, "data": str(args.derm7pt), "labels": dict(EXTERNAL_COLOUR_LABELS),
            "n": parts["all"]["white"]["n"]}


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _cell(v: dict, what: str) -> str:
    f = lambda x: "-" if x is None else f"{x:.2f}"   # noqa: E731
    if what == "artefacts":
        return f"P {f(v['precision'])} R {f(v['sensitivity'])} ({v['labelled_present']}/{v['n']})"
    return f"BA {f(v['balanced_accuracy'])} ({v['labelled_present']}/{v['n']})"


if __name__ == "__main__":
    sys.exit(main())
