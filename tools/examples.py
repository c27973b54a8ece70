"""Run the shipped classifier and its quality gate on every bundled example and record what each
one shows, so the Analyse page can open on a typical case the gate passes and its picker can say
what each example is for (issue 26.13). Nothing is picked by hand: the order comes from the run.

    python -m tools.examples                     # assets/models, assets/examples/examples.json
    python -m tools.examples --models DIR --examples DIR

Writes, per record of examples.json, a "gate" object: passed, the gate's warnings, the model's top
class, whether it matches the recorded diagnosis, the classifier's weights sha256 (first 16 hex
digits; the page ignores a record measured on other weights) and the command; and "shows", the
picker's one-line description. Records are kept in their order; the page sorts them
(app/widgets/upload.py: typical cases first, the most confident first; the first one is the default).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.files import atomic_write
from model.nets.weights_hash import weights_sha256

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python -m tools.examples"


def shows(rec: dict, gate: dict) -> str:
    """What the example demonstrates, without naming its diagnosis (shown after the analysis)."""
    if not gate["passed"]:
        return "an image the quality gate rejects: the output is hidden"
    if rec.get("split") == "train":
        return "an image the model was trained on: its answer says little"
    if not gate["correct"]:
        return "the gate passes, but the model's top class is wrong"
    if gate["low_confidence"]:
        return "the gate passes; a correct but uncertain answer"
    return "a typical case: the gate passes and the model answers correctly"


def measure(models: Path, folder: Path) -> list[dict]:
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(models)
    digest = weights_sha256(models / "classifier")[:16]
    records = json.loads((folder / "examples.json").read_text(encoding="utf-8"))
    for rec in records:
        a = analyzer.analyze((folder / rec["file"]).read_bytes(), cam_methods=())
        gate = {"passed": not a.gated, "warnings": list(a.quality_warnings), "top_class": a.top_class,
                "top_probability": round(a.top_probability, 4),
                "correct": a.top_class == str(rec.get("dx", "")).lower(), "low_confidence": bool(a.low_confidence),
                "weights_sha256": digest, "command": COMMAND}
        rec["gate"], rec["shows"] = gate, shows(rec, gate)
        print(f"{rec['file']}: {rec['shows']} (top {a.top_class}, dx {rec.get('dx')})", file=sys.stderr)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--examples", type=Path, default=REPO / "assets" / "examples")
    args = ap.parse_args(argv)
    records = measure(args.models, args.examples)
    text = json.dumps(records, indent=1) + "\n"
    atomic_write(args.examples / "examples.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
