"""Archive-scale prediction throughput: `python -m model.cli.predict` (in-process) over a zip of
JPEGs, ISIC 2018 CSV out, optionally with ISIC masks: images/s from reading the archive to the
written rows, i.e. what a user scoring a challenge archive waits for.

    python -m bench.archive_predict [--models assets/models] [--images 256] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

from bench.common import DEFAULT_IMAGE_GLOBS, REPO, find_images, log, summarize


def bench_archive(models: Path, images: list[Path], n_items: int, batch_size: int, repeats: int, device: str,
                  masks: bool = False) -> dict:
    from model.cli.predict import main as predict

    blobs = [p.read_bytes() for p in images]
    rates = []
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        archive = Path(tmp) / "archive.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress
            for i in range(n_items):
                zf.writestr(f"ISIC_{i:07d}.jpg", blobs[i % len(blobs)])
        argv = [str(models), str(archive), "--format", "isic2018", "--out", str(Path(tmp) / "pred.csv"),
                "--device", device, "--batch-size", str(batch_size)] + (["--masks", str(Path(tmp) / "m")] if masks else [])
        with contextlib.redirect_stderr(io.StringIO()):  # warm-up: one image
            predict([str(models), str(images[0]), "--format", "isic2018", "--out", str(Path(tmp) / "warm.csv"),
                     "--device", device])
        for r in range(max(1, repeats)):
            t0 = time.perf_counter()
            rc = predict(argv)  # the CLI synchronises: rows are written from CPU tensors
            s = time.perf_counter() - t0
            assert rc == 0, f"model.inference.predict exited with {rc}"
            rates.append(n_items / s)
            log(f"  [{device}] archive predict {r + 1}/{max(1, repeats)}: {n_items} images in {s:.1f} s "
                f"({rates[-1]:.1f} images/s)")
    return {"images": n_items, "batch_size": batch_size, "masks": masks, "format": "isic2018",
            "input": "zip of JPEGs (read, decode, classify, write)", "images_per_s": summarize(rates)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.archive_predict", description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--images", type=int, default=256, help="images in the archive (the example set, repeated)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--masks", action="store_true", help="also write ISIC Task 1 masks")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.device == "auto" else [args.device]
    images = find_images(DEFAULT_IMAGE_GLOBS)
    load = [round(x, 2) for x in os.getloadavg()]
    out = {"loadavg_at_start": load, "torch_threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "devices": {}}
    for dev in devices:
        out["devices"][dev] = bench_archive(args.models, images, args.images, args.batch_size, args.repeats, dev,
                                            args.masks)
    out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
