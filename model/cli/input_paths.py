"""Compare input paths on full-resolution photographs and their 200x150 twins (the paired table).

    python -m model.cli.input_paths BUNDLE --fullres DIR --twins DIR [--record]

BUNDLE is a classifier bundle (a models folder's segmenter plays no part). DIR: folders with
`images/`; an image is paired with the file of the same name among the twins. Each candidate of
model.evaluation.input_paths is tried; `--record` writes the table into meta.json `input_path`
(what the model card shows) beside the path the bundle uses.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from model.cli.common import fail
from model.data.dataset import image_files
from model.evaluation.input_paths import CANDIDATES, markdown, paired_table
from model.nets.bundle import BundleError, load_bundle, update_meta


def pairs_of(fullres: Path, twins: Path) -> list[tuple[str, bytes, bytes]]:
    full = image_files(fullres / "images")
    out = [(p.stem, p.read_bytes(), (twins / "images" / p.name).read_bytes()) for p in full
           if (twins / "images" / p.name).is_file()]
    if not out:
        raise FileNotFoundError(f"no image of {fullres / 'images'} has a twin of the same name in {twins / 'images'}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.cli.input_paths", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle folder")
    ap.add_argument("--fullres", type=Path, required=True, help="full-resolution images (a folder with images/)")
    ap.add_argument("--twins", type=Path, required=True, help="the same photographs as trained on (images/)")
    ap.add_argument("--record", action="store_true", help="write the table into BUNDLE/meta.json (input_path)")
    args = ap.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        table = paired_table(bundle, pairs_of(args.fullres, args.twins))
    except (BundleError, OSError) as e:
        return fail(e)
    print(markdown(table, bundle.classes))
    used = next((name for name, dom in CANDIDATES.items()
                 if all(bundle.domain.get(k) == v for k, v in dom.items() if k != "colour_constancy")), None)
    if args.record:
        update_meta(args.bundle, input_path={
            "pairs": table, "used": used, "fullres": str(args.fullres), "twins": str(args.twins),
            "command": "python -m model.cli.input_paths " + " ".join(argv if argv is not None else sys.argv[1:])})
        print(f"recorded as input_path in {args.bundle / 'meta.json'} (this bundle uses: {used})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
