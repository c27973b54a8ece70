"""Batch review of issue 11's two heavy uploads, through the app's own code in a fresh process:
peak memory of the whole process (VmHWM) and time, with the machine's load beside them.

    python -m tools.batch_review big-jpegs            # 16 JPEGs of 7000x7000 in one zip (~12 MB)
    python -m tools.batch_review tiny                 # 1,000 tiny images in one zip
    python -m tools.batch_review tiny --via code --profile   # where the time goes (cProfile)

--via page (the default) runs the Batch review page itself in this process with Streamlit's
AppTest, as a server runs it: gather, classify_items (Analyzer.classify_many in chunks, the
progress bar), the results table and the CSV. --via code calls app.widgets.tables's gather and
classify_items directly. Models: assets/models unless --models. The zip is built in a child
process, so building it does not count towards the peak. Prints one JSON object on stdout and a
readable summary on stderr.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "tests" / "data" / "fullres" / "images").glob("*.jpg"))
CASES = ("big-jpegs", "tiny")


# ----------------------------------------------------------------------------- the uploads
def _big_jpegs(n: int = 16, side: int = 7000) -> dict[str, bytes]:
    """n plain side x side JPEGs: the bundled 600x450 examples enlarged (one encoding per source)."""
    from PIL import Image

    encoded = []
    for src in SOURCES:
        img = Image.open(src).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=65)  # ~0.75 MB each: a zip of about 12 MB, as in the issue
        encoded.append(buf.getvalue())
        del img
    return {f"big/{i:02d}_{SOURCES[i % len(SOURCES)].stem}.jpg": encoded[i % len(encoded)] for i in range(n)}


def _tiny(n: int = 1000) -> dict[str, bytes]:
    """n images of 8 to 48 pixels a side (crops of the bundled examples), PNG and JPEG."""
    import numpy as np
    from PIL import Image

    photos = [np.asarray(Image.open(s).convert("RGB")) for s in SOURCES]
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        side = int(rng.integers(8, 49))
        photo = photos[i % len(photos)]
        y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
        buf = io.BytesIO()
        fmt = "PNG" if i % 2 else "JPEG"
        Image.fromarray(photo[y:y + side, x:x + side]).save(buf, fmt)
        out[f"tiny/{i:04d}.{fmt.lower()}"] = buf.getvalue()
    return out


def make_zip(case: str, path: Path) -> None:
    members = _big_jpegs() if case == "big-jpegs" else _tiny()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# ----------------------------------------------------------------------------- measuring
def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (e.g. VmHWM, VmRSS) in MB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _via_code(data: bytes, models: Path, ticks: list) -> tuple[int, float, float | None]:
    from app.widgets.tables import classify_items, gather
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(models)
    loaded = _rss_mb()
    t0 = time.perf_counter()
    items = gather([("upload.zip", data)])
    preds = classify_items(analyzer, items.images, progress=lambda done, total: ticks.append(
        (time.perf_counter() - t0, done / total)))
    return len(preds), time.perf_counter() - t0, loaded


def _via_page(data: bytes, models: Path, ticks: list) -> tuple[int, float, float | None]:
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.testing.v1 import AppTest

    real_progress = DeltaGenerator.progress
    t0 = [0.0]

    def progress(self, value, text=None):
        ticks.append((time.perf_counter() - t0[0], float(value)))
        return real_progress(self, value, text=text)

    DeltaGenerator.progress = progress
    os.environ["DERMO_MODELS_DIR"] = str(models)
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=900)
    at.run()
    at.switch_page("batch/page.py").run()
    loaded = _rss_mb()
    t0[0] = time.perf_counter()
    at.file_uploader(key="batch_files").set_value(("upload.zip", data, "application/zip")).run()
    seconds = time.perf_counter() - t0[0]
    if at.exception:
        raise RuntimeError(f"the page failed: {[e.value for e in at.exception]}")
    return len(at.dataframe(key="batch_table").value), seconds, loaded


def measure(case: str, via: str, models: Path, profile: bool = False) -> dict:
    from app.threads import sleep_while_waiting

    sleep_while_waiting()  # as the app does before its first torch import
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / f"{case}.zip"
        subprocess.run([sys.executable, "-m", "tools.batch_review", "--make", case, str(zpath)], check=True,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        data = zpath.read_bytes()
    load_start = os.getloadavg()
    ticks: list[tuple[float, float]] = []
    run = _via_page if via == "page" else _via_code
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        images, seconds, loaded = prof.runcall(run, data, models, ticks)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    else:
        images, seconds, loaded = run(data, models, ticks)
    import torch

    return {"case": case, "via": via, "zip_mb": round(len(data) / 2**20, 1), "images": images,
            "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1),
            "progress_updates": len(ticks), "progress_values": [round(v, 3) for _, v in ticks][:3] + ["..."],
            "first_progress_s": round(ticks[0][0], 2) if ticks else None,
            "peak_rss_mb": round(_peak_rss_mb()), "rss_after_model_load_mb": round(loaded) if loaded else None,
            "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "models": str(models), "profiled": profile}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.batch_review", description=__doc__.split("\n")[0])
    ap.add_argument("case", nargs="?", choices=CASES)
    ap.add_argument("--via", choices=("page", "code"), default="page")
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--profile", action="store_true", help="cProfile the run (stderr); times then include its overhead")
    ap.add_argument("--make", nargs=2, metavar=("CASE", "ZIP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make:
        make_zip(args.make[0], Path(args.make[1]))
        return 0
    if not args.case:
        ap.error("choose a case: " + ", ".join(CASES))
    result = measure(args.case, args.via, args.models, args.profile)
    print(json.dumps(result))
    print(f"{result['case']} via {result['via']}: {result['images']} images in {result['seconds']} s "
          f"({result['images_per_s']}/s), {result['progress_updates']} progress updates, peak RSS "
          f"{result['peak_rss_mb']} MB (after model load {result['rss_after_model_load_mb']} MB); load average "
          f"{result['loadavg_start'][0]} -> {result['loadavg_end'][0]} on {result['cpus']} CPUs, "
          f"{result['torch_threads']} torch threads", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
