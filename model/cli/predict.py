"""Predict classes (and lesion masks) for any number of images: folders, zip archives, files.

    python -m model.cli.predict BUNDLE DIR|ZIP|IMAGE [...] [--format jsonl|csv|isic2018] [--out FILE]
                            [--masks DIR] [--device cuda] [--batch-size 32] [--tta]

BUNDLE is a classifier bundle, a segmenter bundle (masks only), or a models folder holding
`classifier/` and `segmenter/`. Images are read one batch at a time (memory stays flat however
many there are); a progress bar shows on a terminal (stderr). A file that cannot be read or
decoded prints `NAME: error: WHY` on stderr and makes the exit status 1; the run goes on.
`--format isic2018` writes the ISIC 2018 Task 3 submission CSV; `--masks DIR` writes ISIC Task 1
masks (`<image>_segmentation.png`, 0/255, at the image's own size). `--device cuda` runs the
models in float16 autocast.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import tempfile
import itertools
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TextIO

import numpy as np
from PIL import Image

from model.files import printable, safe_csv_writer
from model.nets.bundle import Bundle, BundleError, load_bundle, read_meta
from model.aids.case_aids import aids_json
from model.aids.conformal import DEFAULT_COVERAGE
from model.data.isic import MASK_SUFFIX, IsicFormatError, isic2018_order, isic2018_row
from model.inference.results import BatchPrediction
from model.data.dataset import IMAGE_SUFFIXES
from model.data.sources import Item, Sources
from model.cli.common import fail

FORMATS = ("jsonl", "csv", "isic2018")


def json_record(pred: BatchPrediction, classes: Sequence[str], coverage: int = DEFAULT_COVERAGE,
                original: str | None = None) -> dict:
    """The one place a prediction becomes an output record (JSON line; CSV columns follow it).
    `original`: the file name as it came, when it differs from the cleaned one in `image`."""
    return {"image": pred.name, **({"original_name": original} if original and original != pred.name else {}),
            "top_class": pred.top_class,
            "top_probability": round(pred.top_probability, 5),
            "malignant_probability": round(pred.malignant_probability, 5),
            "melanoma_flag": pred.melanoma_flag,
            "probabilities": {c: round(float(p), 5) for c, p in zip(classes, pred.probabilities)},
            "flags": pred.flags, **aids_json(pred, coverage),
            "concepts": pred.concepts, "seven_point_score": pred.seven_point_score}


class Writer:
    """Writes records in the chosen format to a text stream, one at a time."""

    def __init__(self, fmt: str, stream: TextIO, classes: Sequence[str], coverage: int = DEFAULT_COVERAGE):
        self.fmt, self.stream, self.classes, self.coverage = fmt, stream, list(classes), coverage
        self.csv = safe_csv_writer(stream) if fmt != "jsonl" else None
        if fmt == "isic2018":
            self.order = isic2018_order(self.classes)
            self.csv.writerow(["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"])
        elif fmt == "csv":
            from model.data.checklist import NAMES   # the 7-point criteria, one column each (empty without probes)

            self.criteria = NAMES
            self.csv.writerow(["image", "top_class", "top_probability", "malignant_probability", "melanoma_flag",
                               "flags", "prediction_set", *self.classes, "original_name", "seven_point_score",
                               *(f"concept_{n}" for n in NAMES)])

    def write(self, item: Item, pred: BatchPrediction) -> None:
        if self.fmt == "isic2018":
            self.csv.writerow(isic2018_row(item.image_id, pred.probabilities, self.order))
            return
        rec = json_record(pred, self.classes, self.coverage, original=item.name)
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(rec) + "\n")
        else:
            self.csv.writerow([rec["image"], rec["top_class"], rec["top_probability"], rec["malignant_probability"],
                               rec["melanoma_flag"], ";".join(rec["flags"]),
                               ";".join(rec["prediction_set"] or []), *rec["probabilities"].values(),
                               printable(rec.get("original_name", "")),   # escaped: \u202e, not the override
                               rec["seven_point_score"], *((rec["concepts"] or {}).get(n, "") for n in self.criteria)])


def load_models(path: Path, segmenter_path: Path | None, device) -> tuple[Bundle | None, Bundle | None]:
    """(classifier, segmenter) from a bundle folder or a models folder; either may be None."""
    if (path / "classifier" / "meta.json").is_file():
        classifier = load_bundle(path / "classifier", device)
        if segmenter_path is None and (path / "segmenter" / "meta.json").is_file():
            segmenter_path = path / "segmenter"
    elif read_meta(path)["task"] == "segment":
        return None, load_bundle(path, device)
    else:
        classifier = load_bundle(path, device)
        if segmenter_path is None and (path.parent / "segmenter" / "meta.json").is_file():
            segmenter_path = path.parent / "segmenter"
    return classifier, (load_bundle(segmenter_path, device) if segmenter_path else None)


NAME_MAX = 255   # bytes in one file name on Linux and macOS file systems


def mask_name(image_id: str, used: set[str]) -> str:
    """A mask file name that can be written and is not yet taken: `<image>_segmentation.png`,
    shortened with a hash of the full name when too long, `<image> (2)_segmentation.png` for a second
    image with the same base name (as the app renames "dup.jpg (2)")."""
    base = image_id.replace("/", "_").replace("\\", "_").lstrip(".") or "image"
    room = NAME_MAX - len(MASK_SUFFIX.encode()) - len(" (99999)".encode())
    if len(base.encode()) > room:
        digest = hashlib.sha256(base.encode()).hexdigest()[:12]
        base = base.encode()[:room - 13].decode(errors="ignore") + "~" + digest
    name, k = f"{base}{MASK_SUFFIX}", 1
    while name.lower() in used:
        k += 1
        name = f"{base} ({k}){MASK_SUFFIX}"
    used.add(name.lower())
    return name


def write_masks(segmenter: Bundle, items: Sequence[Item], out_dir: Path, report, used: set[str],
                decode_errors: bool = True) -> int:
    """ISIC Task 1 masks: the lesion at the image's own (upright) size, 0 or 255. Returns how many
    were written; a mask that cannot be written is reported and the run goes on. `decode_errors`:
    report images that cannot be decoded (False when the classifier has reported them already)."""
    from model.nets.forward import segment_probs
    from model.inference.working import MAX_WORKING_SIDE
    from model.data.preprocess import ImageError, decode_with_size
    from model.nets.segmenter import postprocess_mask

    decoded = []
    for it in items:
        try:
            decoded.append((it, *decode_with_size(it.data, max_side=MAX_WORKING_SIDE)))
        except ImageError as e:
            if decode_errors:
                report(it.name, str(e))
    if not decoded:
        return 0
    maps = segment_probs(segmenter, [d[1] for d in decoded], out_sizes=[d[2] for d in decoded])
    threshold = float(segmenter.meta.get("threshold", 0.5))
    written = 0
    for (it, _, _), prob in zip(decoded, maps):
        mask = postprocess_mask(prob, threshold).astype(np.uint8) * 255
        try:
            Image.fromarray(mask, mode="L").save(out_dir / mask_name(it.image_id, used))
            written += 1
        except OSError as e:
            report(it.name, f"mask not written ({e.strerror or e})")
    return written


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Output:
    """Where predictions go: standard output, or --out through a temporary file beside it that is
    renamed over it at the end, so an interrupted run never leaves half a file in its place."""

    def __init__(self, path: Path | None, inputs: Sequence[Path]):
        self.path, self.tmp = path, None
        if path is None:
            self.stream = sys.stdout
            return
        if any(path.resolve() == p.resolve() for p in inputs):
            raise OSError(f"--out {path} is one of the inputs: choose another file, so the input is not overwritten.")
        fd, self.tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
        self.stream = os.fdopen(fd, "w", newline="")

    def close(self, keep: bool) -> None:
        if self.tmp is None:
            return
        self.stream.close()
        if keep:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def parse_args(argv: Sequence[str] | None):
    ap = argparse.ArgumentParser(prog="python -m model.cli.predict", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier or segmenter bundle, or a models folder with both")
    ap.add_argument("images", nargs="+", type=Path, help="image files, folders (searched recursively), .zip archives")
    ap.add_argument("--format", default="jsonl", choices=FORMATS,
                    help="jsonl: one JSON object per image; csv: one row per image; isic2018: ISIC 2018 Task 3 "
                         "submission (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC)")
    ap.add_argument("--out", type=Path, help="write predictions here (default: standard output)")
    ap.add_argument("--masks", type=Path, help="write ISIC Task 1 masks (<image>_segmentation.png) into this folder")
    ap.add_argument("--segmenter", type=Path, help="segmenter bundle for --masks (default: a segmenter/ beside the "
                                                   "classifier)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tta", action="store_true", help="average over flipped views")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (CUDA runs in float16 autocast)")
    ap.add_argument("--coverage", type=int, default=DEFAULT_COVERAGE, help="prediction-set coverage, percent (80-99)")
    return ap.parse_args(argv)


def open_models(args, device):
    """(analyzer or None, segmenter or None), refused with a BundleError the user can act on."""
    import torch

    from model.inference.pipeline import Analyzer

    if device.type == "cuda" and not torch.cuda.is_available():
        raise BundleError("--device cuda: no CUDA GPU is visible here; use --device cpu (or auto).")
    classifier, segmenter = load_models(args.bundle, args.segmenter, device)
    if args.masks and segmenter is None:
        raise BundleError("--masks needs a segmenter bundle: pass a models folder, a segmenter bundle, or "
                          "--segmenter DIR.")
    if classifier is None and not args.masks:
        raise BundleError(f"{args.bundle} is a segmenter bundle: add --masks DIR to write its masks.")
    return (Analyzer(classifier) if classifier is not None else None), segmenter


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from model.nets.forward import pick_device

    device = pick_device(args.device)
    try:
        analyzer, segmenter = open_models(args, device)
        out = Output(args.out, args.images)
    except (BundleError, IsicFormatError, OSError) as e:
        return fail(e)
    if args.masks:
        args.masks.mkdir(parents=True, exist_ok=True)
    sources = Sources(args.images)
    print(sources.summary(), file=sys.stderr)
    done = False
    try:
        predicted, failures = run(args, analyzer, segmenter, sources, out.stream, device)
        done = True
    except IsicFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        out.close(keep=done)
    if failures:
        print(f"{failures} of {len(sources)} files could not be used (see the lines above)", file=sys.stderr)
    if not predicted:
        print(f"error: nothing was predicted: {len(sources)} image(s) found in the inputs"
              + (", none of them usable" if len(sources) else
                 f" (image files end in {', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}; zips inside zips "
                 "are not opened)"), file=sys.stderr)
        return 1
    return 1 if failures else 0


def run(args, analyzer, segmenter, sources, out, device) -> tuple[int, int]:
    """Predict every source a batch at a time; (predictions written, files that could not be used)."""
    import torch
    from tqdm import tqdm

    bar = tqdm(total=len(sources), unit="img", file=sys.stderr, disable=not sys.stderr.isatty(), mininterval=1.0)
    counts = {"predicted": 0, "failures": 0}

    def report(name: str, why: str) -> None:
        counts["failures"] += 1
        (tqdm.write if not bar.disable else print)(f"{printable(name)}: error: {why}", file=sys.stderr)

    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    writer = Writer(args.format, out, analyzer.classes, args.coverage) if analyzer is not None else None
    if analyzer is not None and analyzer.aids.index_error:
        print(f"warning: {analyzer.aids.index_error}", file=sys.stderr)
    used: set[str] = set()   # mask names written so far
    try:
        with amp:
            for chunk in chunks(sources, args.batch_size):
                good = [it for it in chunk if it.error is None]
                for it in chunk:
                    if it.error is not None:
                        report(it.name, it.error)
                if analyzer is not None and good:
                    for it, pred in zip(good, analyzer.classify_many([(it.shown, it.data) for it in good], args.tta)):
                        if pred.error:
                            report(it.name, pred.error)
                        else:
                            writer.write(it, pred)
                            counts["predicted"] += 1
                if args.masks and good:
                    written = write_masks(segmenter, good, args.masks, report, used, decode_errors=analyzer is None)
                    if analyzer is None:
                        counts["predicted"] += written
                out.flush()
                bar.update(len(chunk))
    finally:
        bar.close()
    return counts["predicted"], counts["failures"]


if __name__ == "__main__":
    sys.exit(main())
