"""Set the colour rules' numbers on the `tune` part of tests/data/labelled (never the holdout):
coordinate search over the reference colours (CIELAB, steps of 2), the distance threshold and the
minimum share per colour, maximising the mean balanced accuracy over the six colours. Prints the
rules to paste into model/inference/colours.py; the figures to report come from
`python -m model.cli.label_agreement`, not from here.

    python -m tools.tune_colour_rules [--labels tests/data/labelled] [--rounds 4]
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from model.evaluation.label_agreement import balanced_accuracy, load_labelled
from model.inference.colours import COLOUR_NAMES, RULES, ColourRules, colour_shares, lesion_lab


def score(rules: ColourRules, labs: list[np.ndarray], truth: np.ndarray) -> float:
    said = np.array([[colour_shares(lab, rules)[n] >= rules.min_share[n] for n in COLOUR_NAMES] for lab in labs])
    return float(np.mean([balanced_accuracy(said[:, k], truth[:, k]) for k in range(len(COLOUR_NAMES))]))


def moves(rules: ColourRules):
    for name in COLOUR_NAMES:
        for axis in range(3):
            for step in (-4.0, -2.0, 2.0, 4.0):
                ref = list(rules.references[name])
                ref[axis] += step
                yield dataclasses.replace(rules, references={**rules.references, name: tuple(ref)})
        for f in (0.5, 0.7, 1.4, 2.0):
            yield dataclasses.replace(rules, min_share={**rules.min_share, name: round(min(0.5, rules.min_share[name] * f), 4)})
        for step in (-4.0, -2.0, 2.0, 4.0):
            yield dataclasses.replace(rules, max_distance={**rules.max_distance, name: rules.max_distance[name] + step})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, default=Path("tests/data/labelled"))
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    cases = [c for c in load_labelled(args.labels) if c.part == "tune" and c.colours is not None]
    rng = np.random.default_rng(0)
    labs = []
    for c in cases:
        lab = lesion_lab(c.rgb, c.mask, RULES)
        labs.append(lab[rng.permutation(len(lab))[:4000]])
    truth = np.array([[n in c.colours for n in COLOUR_NAMES] for c in cases])
    best, best_score = RULES, score(RULES, labs, truth)
    print(f"start: {best_score:.3f} on {len(cases)} tune images")
    for r in range(args.rounds):
        improved = False
        for cand in moves(best):
            s = score(cand, labs, truth)
            if s > best_score + 1e-9:
                best, best_score, improved = cand, s, True
        print(f"round {r + 1}: {best_score:.3f}")
        if not improved:
            break
    print(best)


if __name__ == "__main__":
    main()
