"""Fit the 7-point concept probes on Derm7pt's select images and measure them on its report images.

    python -m model.cli.concepts BUNDLE --data ../shared/data/derm7pt [--runs 20 --random 20]

Writes BUNDLE/concepts.safetensors (tied to the weights' sha256) and meta.json
`interpretability.concepts` (per-criterion AUROC with CIs, TCAV for melanoma, the checklist's score
against the classifier). The work is done in model.evaluation.checklist; rerun whenever the
classifier changes (train.py does when given --derm7pt).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from model.cli.common import bundle_parser, fail


def command_line(bundle: Path, data: Path, runs: int, n_random: int) -> str:
    extra = "" if (runs, n_random) == (20, 20) else f" --runs {runs} --random {n_random}"
    return f"python -m model.cli.concepts {bundle} --data {data}{extra}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundle_parser("model.cli.concepts", __doc__, "classifier bundle folder",
                       "Derm7pt (metadata.csv with part and the 7 criteria columns, images/)")
    ap.add_argument("--runs", type=int, default=20, help="concept CAVs per criterion for TCAV")
    ap.add_argument("--random", type=int, default=20, help="random-concept CAVs per criterion (at least 10)")
    args = ap.parse_args(argv)
    from model.data.dataset import DatasetError
    from model.evaluation.checklist import run_concepts
    from model.nets.bundle import BundleError

    if args.random < 10 or args.runs < 2:
        return fail(ValueError("TCAV needs --random 10 or more and --runs 2 or more."))
    tty = sys.stderr.isatty()
    try:
        rec = run_concepts(args.bundle, args.data, command_line(args.bundle, args.data, args.runs, args.random),
                           args.runs, args.random,
                           progress=(lambda s, i, n: print(f"\r{s}: {i}/{n}", end="", file=sys.stderr)) if tty else None,
                           log=lambda m: print(m, file=sys.stderr))
    except (BundleError, DatasetError, ValueError) as e:
        return fail(e)
    for name, c in rec["criteria"].items():
        t = rec["tcav"]["criteria"][name]
        auc = "not defined (one side only)" if c["auroc"] is None else \
            f"{c['auroc']:.3f} [{c['auroc_ci'][0]:.3f}, {c['auroc_ci'][1]:.3f}]"
        print(f"{name:28s} AUROC {auc} "
              f"n={c['n_test']} pos={c['positives']}  TCAV {t['tcav']:.2f} vs random {t['random_tcav']:.2f} "
              f"p_bonf={t['p_bonferroni']:.3g}")
    cmp_ = rec["checklist_vs_classifier"]
    for k in ("probe_score", "dermatologist_score", "classifier_top_class", "classifier_melanoma_flag"):
        if k in cmp_:
            print(f"{k:28s} sensitivity {cmp_[k]['sensitivity']:.3f} specificity {cmp_[k]['specificity']:.3f}")
    print(f"agreement: {cmp_['agreement']}; written to {args.bundle / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
