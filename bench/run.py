"""Benchmark: single-image analysis by stage, the naive reference side by side (with an
agreement check), batch throughput, cold start and training throughput.

    python -m bench [--models assets/models] [--repeats N] [--out bench/results/NAME.json]
                    [--markdown FILE] [--device auto|cpu|cuda] [--threads N]

See bench/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE_GLOBS = ("assets/examples/*.jpg", "tests/data/fullres/images/*.jpg")
ALL_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")
TARGETS = {"speedup_vs_naive": 3.0, "analysis_median_ms": 300.0, "batch_images_per_s": 20.0}
PROB_TOL = 1e-4
CAM_MIN_CORR = 0.99
CAM_MAX_ABS_DIFF = 0.05       # accepted instead of the correlation when a map is (near) flat


# ----------------------------------------------------------------------------- small helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarize(values: Sequence[float]) -> dict:
    """median / p95 / mean / min / max of a list of milliseconds (or any numbers)."""
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return {"n": 0, "median": None, "p95": None, "mean": None, "min": None, "max": None}
    r = lambda x: round(float(x), 2)  # noqa: E731
    return {"n": int(v.size), "median": r(np.median(v)), "p95": r(np.percentile(v, 95)), "mean": r(v.mean()),
            "min": r(v.min()), "max": r(v.max())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(torch) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    info = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "platform": platform.platform(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": None,
    }
    try:
        import cv2
        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def find_images(patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_file():
            out.append(p)
            continue
        base = REPO if not p.is_absolute() else Path("/")
        out.extend(sorted(base.glob(str(p).lstrip("/"))))
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


class Clock:
    """perf_counter laps that wait for the GPU first, so GPU work is charged to its stage."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.t = time.perf_counter()

    def lap(self) -> float:
        if self.cuda:
            import torch
            torch.cuda.synchronize()
        now = time.perf_counter()
        ms = (now - self.t) * 1000
        self.t = now
        return ms


# ----------------------------------------------------------------------------- rendering as the app does it
def _render_functions():
    """The app's own helpers (app/components.py) when importable, else equivalent OpenCV code."""
    try:
        from app.components import colorize, feature_tiles, heatmap_overlay, outline_image
        return heatmap_overlay, outline_image, colorize, feature_tiles, "app.components"
    except Exception:  # noqa: BLE001 - the app may be absent or mid-edit; fall back
        import cv2

        def heatmap_overlay(rgb, heat, opacity=0.5):
            heat = np.clip(np.asarray(heat, np.float32), 0, 1)
            if heat.shape != rgb.shape[:2]:
                heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
            colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            return np.uint8(np.clip((1 - opacity) * rgb.astype(np.float32) + opacity * colour, 0, 255))

        def outline_image(rgb, mask):
            out = np.ascontiguousarray(rgb.copy())
            if mask is not None and mask.any():
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                t = max(2, round(max(rgb.shape[:2]) / 250))
                cv2.drawContours(out, contours, -1, (0, 0, 0), t + 2, lineType=cv2.LINE_AA)
                cv2.drawContours(out, contours, -1, (0, 230, 118), t, lineType=cv2.LINE_AA)
            return out

        def colorize(values, size_hw=None):
            v = np.uint8(255 * np.clip(np.asarray(values, np.float32), 0, 1))
            if size_hw is not None:
                v = cv2.resize(v, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_NEAREST)
            return cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)

        def feature_tiles(maps, channels, means, tile=120):
            tiles = []
            for m in maps:
                s = tile / max(m.shape)
                tiles.append(colorize(m, (max(1, round(m.shape[0] * s)), max(1, round(m.shape[1] * s)))))
            return tiles, [f"channel {c}" for c in channels]

        return heatmap_overlay, outline_image, colorize, feature_tiles, "bench fallback (OpenCV)"


def render(fns, image, cams: dict, mask, fmaps=None, channels=(), means=()) -> int:
    """What the Analyse page draws (app/analyse_sections.py): every CAM colourised and blended over
    the image, the lesion outline, the feature-map tiles, and the first feature map enlarged on its
    own and over the image. Returns the number of pixel values produced (keeps the work honest)."""
    heatmap_overlay, outline_image, colorize, feature_tiles = fns[:4]
    n = 0
    for cam in cams.values():
        n += heatmap_overlay(image, cam, 0.5).size
    if mask is not None:
        n += outline_image(image, mask).size
    if fmaps is not None and len(fmaps):
        tiles, _ = feature_tiles(fmaps, list(channels), list(means) or [0.0] * len(fmaps))
        n += sum(t.size for t in tiles)
        n += colorize(fmaps[0], image.shape[:2]).size + heatmap_overlay(image, fmaps[0], 0.5).size
    return n


# ----------------------------------------------------------------------------- agreement
def compare_outputs(fast, naive, input_hw) -> dict:
    """Probabilities, CAM class, each CAM, feature maps and masks of the fast and naive pipelines."""
    from bench.naive import eigencam_flipped

    out = {"prob_max_abs_diff": float(np.abs(fast.probabilities - naive.probabilities).max()),
           "same_cam_class": fast.cam_class == fast.classes[naive.cam_class], "cams": {}}
    for m, ours in fast.cams.items():
        ref = naive.cams[m]
        diff = float(np.abs(ours - ref).max())
        corr = _corr(ours, ref)
        row = {"corr": corr, "max_abs_diff": round(diff, 5)}
        if m == "eigencam" and not _cam_ok(corr, diff) and naive.eigencam_activations is not None:
            flipped = eigencam_flipped(naive.eigencam_activations, input_hw, ours.shape)
            fc, fd = _corr(ours, flipped), float(np.abs(ours - flipped).max())
            row.update(sign_flipped_corr=fc, sign_flipped_max_abs_diff=round(fd, 5))
            row["note"] = ("same up to the arbitrary sign of the SVD component" if _cam_ok(fc, fd)
                           else "disagrees even allowing for the SVD sign")
            row["ok"] = _cam_ok(fc, fd)
            row["corr_up_to_sign"] = fc if row["ok"] else corr
        else:
            row["ok"] = _cam_ok(corr, diff)
            row["corr_up_to_sign"] = corr
        out["cams"][m] = row
    if fast.feature_maps is not None and naive.feature_maps is not None:
        fm = fast.feature_maps
        out["feature_maps"] = {"same_channels": list(fm.channels) == list(naive.feature_channels),
                               "max_abs_diff": float(np.abs(fm.maps - naive.feature_maps).max())
                               if fm.maps.shape == naive.feature_maps.shape else None}
    if fast.lesion_mask is not None or naive.lesion_mask is not None:
        same = (fast.lesion_mask is not None and naive.lesion_mask is not None
                and fast.lesion_mask.shape == naive.lesion_mask.shape
                and bool((fast.lesion_mask == naive.lesion_mask).all()))
        out["masks_identical"] = same
        if not same and fast.lesion_mask is not None and naive.lesion_mask is not None:
            out["mask_pixels_different"] = int((fast.lesion_mask != naive.lesion_mask).sum())
    fm_ok = out.get("feature_maps", {}).get("same_channels", True) and \
        (out.get("feature_maps", {}).get("max_abs_diff") or 0) < 1e-3
    out["ok"] = bool(out["prob_max_abs_diff"] <= PROB_TOL and out["same_cam_class"] and fm_ok
                     and all(r["ok"] for r in out["cams"].values()) and out.get("masks_identical", True))
    return out


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 6)


def _cam_ok(corr, diff) -> bool:
    return (corr is not None and corr > CAM_MIN_CORR) or diff < CAM_MAX_ABS_DIFF


def merge_agreement(rows: list[dict]) -> dict:
    """Worst case over all compared images."""
    if not rows:
        return {"n_images": 0, "ok": None}
    methods = rows[0]["cams"].keys()
    cams = {}
    for m in methods:
        rs = [r["cams"][m] for r in rows]
        corrs = [r["corr"] for r in rs if r["corr"] is not None]
        up = [r["corr_up_to_sign"] for r in rs if r.get("corr_up_to_sign") is not None]
        cams[m] = {"min_corr": min(corrs) if corrs else None, "min_corr_up_to_sign": min(up) if up else None,
                   "max_abs_diff": max(r["max_abs_diff"] for r in rs), "ok": all(r["ok"] for r in rs)}
        notes = sorted({r["note"] for r in rs if "note" in r})
        if notes:
            cams[m]["notes"] = notes
    out = {"n_images": len(rows), "prob_max_abs_diff": max(r["prob_max_abs_diff"] for r in rows),
           "prob_tolerance": PROB_TOL, "same_cam_class": all(r["same_cam_class"] for r in rows),
           "cams": cams, "cam_criterion": f"corr > {CAM_MIN_CORR} or max |diff| < {CAM_MAX_ABS_DIFF}"}
    if any("masks_identical" in r for r in rows):
        out["masks_identical"] = all(r.get("masks_identical", False) for r in rows)
        diffs = [r.get("mask_pixels_different", 0) for r in rows]
        if any(diffs):
            out["mask_pixels_different_max"] = max(diffs)
    if any("feature_maps" in r for r in rows):
        out["feature_maps"] = {"same_channels": all(r["feature_maps"]["same_channels"] for r in rows),
                               "max_abs_diff": max((r["feature_maps"]["max_abs_diff"] or 0) for r in rows)}
    out["ok"] = all(r["ok"] for r in rows)
    return out


# ----------------------------------------------------------------------------- single-image analysis
def cam_breakdown(analyzer, data: bytes, methods: Sequence[str], clock_device) -> dict[str, float]:
    """Own timers inside the one-pass CAM step (the pipeline reports it as one number):
    the forward pass (prediction + activations), the one backward pass the gradient methods
    share, and each method's formula plus its scaling/resizing to the image."""
    import torch
    from model.interpret import _cam, scale_cam
    from model.preprocess import decode_image, normalize, resize_map, to_uint8_batch

    b = analyzer.classifier
    rgb = decode_image(data)
    x = normalize(to_uint8_batch([rgb], b.input_size).to(analyzer.device), b.mean, b.std)
    layer = len(analyzer.layers) - 1
    t: dict[str, float] = {}
    clk = Clock(clock_device)
    with torch.enable_grad():
        final, inter = b.model.forward_intermediates(x, indices=[layer])
        b.model.forward_head(final, pre_logits=True)
        logits = b.model.forward_head(final)
        cls = int(logits[0].argmax())
        logits.detach()[0, cls].item()  # waits for the device: the forward pass is done
        t["classify"] = clk.lap()
        act = inter[0]
        grads = None
        if any(m != "eigencam" for m in methods):
            grads = torch.autograd.grad(logits[0, cls], act)[0][0].detach()
            t["cam_backward"] = clk.lap()
    a = act[0].detach().float()
    for m in methods:
        c = _cam(m, a, grads).cpu().numpy()
        np.clip(resize_map(scale_cam(c), rgb.shape[:2]), 0, 1)
        t[f"cam:{m}"] = clk.lap()
    return {k: round(v, 3) for k, v in t.items()}


def bench_analysis(analyzer, models_dir: Path, images: list[Path], repeats: int, methods: Sequence[str],
                   device: str, fns, naive: bool = True) -> dict:
    """Fast and naive pipelines interleaved image by image (so background load hits both alike)."""
    from bench.naive import naive_analyze

    feature_layer = analyzer.layers[-1]
    opts = dict(cam_methods=tuple(methods), tta=True, feature_layer=feature_layer, n_feature_maps=16, segment=True)
    blobs = [(p.name, p.read_bytes()) for p in images]
    # warm-up (first calls allocate, pick kernels, import pytorch_grad_cam): not timed
    a = analyzer.analyze(blobs[0][1], **opts)
    render(fns, a.image, a.cams, a.lesion_mask, a.feature_maps.maps, a.feature_maps.channels)
    if naive:
        naive_analyze(models_dir, blobs[0][1], methods, tta=True, feature_layer=-1, device=device)
    fast_stages: dict[str, list[float]] = {}
    pipe_stages: dict[str, list[float]] = {}
    naive_stages: dict[str, list[float]] = {}
    agreement, per_image = [], []
    total_runs = repeats * len(blobs)
    k = 0
    for rep in range(repeats):
        for name, data in blobs:
            k += 1
            clk = Clock(device)
            a = analyzer.analyze(data, **opts)
            analyse_ms = clk.lap()
            fm = a.feature_maps
            render(fns, a.image, a.cams, a.lesion_mask, fm.maps, fm.channels, fm.mean_activation)
            render_ms = clk.lap()
            for key, v in a.timings_ms.items():
                pipe_stages.setdefault(key, []).append(v)
            bd = cam_breakdown(analyzer, data, methods, device)
            row = {"decode_resize": a.timings_ms.get("decode_resize"), **bd}
            for key in ("tta", "feature_maps", "segment", "measure", "quality"):
                if key in a.timings_ms:
                    row[key] = a.timings_ms[key]
            row["render"] = render_ms
            row["total"] = analyse_ms + render_ms
            for key, v in row.items():
                fast_stages.setdefault(key, []).append(v)
            line = f"  [{device}] {k}/{total_runs} {name}: fast {row['total']:.0f} ms"
            rec = {"image": name, "repeat": rep, "fast_ms": round(row["total"], 2)}
            if naive:
                clk = Clock(device)
                n = naive_analyze(models_dir, data, methods, tta=True, feature_layer=-1, device=device)
                naive_ms = clk.lap()
                render(fns, n.image, n.cams, n.lesion_mask, n.feature_maps, n.feature_channels)
                n_render = clk.lap()
                for key, v in {**n.timings_ms, "render": n_render, "total": naive_ms + n_render}.items():
                    naive_stages.setdefault(key, []).append(v)
                if rep == 0:
                    agreement.append(compare_outputs(a, n, analyzer.classifier.input_size))
                line += f", naive {naive_ms + n_render:.0f} ms"
                rec["naive_ms"] = round(naive_ms + n_render, 2)
            per_image.append(rec)
            log(line)
    out = {
        "settings": {"cam_methods": list(methods), "tta": True, "feature_layer": feature_layer, "n_feature_maps": 16,
                     "segment": analyzer.segmenter is not None, "images": [n for n, _ in blobs],
                     "image_sizes": sorted({f"{a.image.shape[1]}x{a.image.shape[0]}"}), "repeats": repeats,
                     "render": fns[4]},
        "fast": {k: summarize(v) for k, v in fast_stages.items()},
        "fast_pipeline_timings": {k: summarize(v) for k, v in pipe_stages.items()},
        "per_run": per_image,
    }
    if naive:
        out["naive"] = {k: summarize(v) for k, v in naive_stages.items()}
        f, n = out["fast"]["total"]["median"], out["naive"]["total"]["median"]
        out["speedup_median"] = round(n / f, 2)
        load = out["naive"].get("load_models", {}).get("median") or 0.0
        out["speedup_median_excluding_naive_model_reload"] = round((n - load) / f, 2)
        out["agreement"] = merge_agreement(agreement)
    return out


# ----------------------------------------------------------------------------- batch review
def bench_batch(analyzer, images: list[Path], n_items: int, batch_size: int, repeats: int, device: str) -> dict:
    blobs = [p.read_bytes() for p in images]
    items = [(f"img{i}.jpg", blobs[i % len(blobs)]) for i in range(n_items)]
    analyzer.classify_many(items[:min(4, n_items)], batch_size=batch_size)  # warm-up
    rates, per_image = [], []
    for r in range(max(1, repeats)):
        clk = Clock(device)
        preds = analyzer.classify_many(items, tta=False, batch_size=batch_size)
        ms = clk.lap()
        assert all(p.error is None for p in preds), [p.error for p in preds if p.error]
        rates.append(n_items / (ms / 1000))
        per_image.append(ms / n_items)
        log(f"  [{device}] batch review {r + 1}/{max(1, repeats)}: {n_items} images in {ms:.0f} ms "
            f"({rates[-1]:.1f} images/s)")
    return {"images": n_items, "batch_size": batch_size, "tta": False, "input": "JPEG bytes (decode included)",
            "images_per_s": summarize(rates), "ms_per_image": summarize(per_image)}


# ----------------------------------------------------------------------------- cold start
COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[5]))  # the same thread count as the parent benchmark
from model.pipeline import Analyzer
from model.interpret import CAM_METHODS
t1 = time.perf_counter()
streamlit_s = None
try:
    import streamlit  # the app imports it too
    streamlit_s = time.perf_counter() - t1
except ImportError:
    pass
t2 = time.perf_counter()
analyzer = Analyzer.from_dir(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
data = open(sys.argv[3], "rb").read()
a = analyzer.analyze(data, cam_methods=tuple(sys.argv[4].split(",")), tta=True,
                     feature_layer=analyzer.layers[-1], segment=True)
t4 = time.perf_counter()
print("COLD " + json.dumps({"import_s": t1 - t0, "import_streamlit_s": streamlit_s, "load_s": t3 - t2,
                            "first_analysis_s": t4 - t3, "top_class": a.top_class,
                            "torch_threads": torch.get_num_threads()}))
"""


def bench_cold_start(models_dir: Path, image: Path, device: str, methods: Sequence[str], runs: int) -> dict:
    import torch

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    for r in range(max(1, runs)):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(models_dir), device, str(image), ",".join(methods),
                               str(torch.get_num_threads())],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - start
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COLD ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"cold-start subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
        row = json.loads(line[5:])
        row["process_wall_s"] = wall
        rows.append(row)
        log(f"  [{device}] cold start {r + 1}/{max(1, runs)}: {wall:.2f} s to first result "
            f"(import {row['import_s']:.2f}, load {row['load_s']:.2f}, first analysis {row['first_analysis_s']:.2f})")
    keys = ("process_wall_s", "import_s", "import_streamlit_s", "load_s", "first_analysis_s")
    out = {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys if all(r[k] is not None for r in rows)}
    out.update(runs=len(rows), image=image.name, note="fresh `python` process: interpreter start, imports, "
               "model load and the first full analysis; the OS file cache is warm")
    return out


# ----------------------------------------------------------------------------- training throughput
def _training_data(meta: dict, n: int, data_dir: Path | None, with_masks: bool):
    import torch
    from model.data import decode_records, load_dataset

    h, w = meta["input_size"]
    if data_dir is not None and data_dir.is_dir():
        ds = load_dataset(data_dir)
        records = [r for r in ds.records if r.mask_path is not None] if with_masks else ds.records
        classes = list(meta.get("classes") or sorted({r.label for r in records}))
        records = [r for r in records if r.label in classes]
        dec = decode_records(records, (h, w), classes, with_masks, workers=2)
        if len(dec.records):
            idx = np.resize(np.arange(len(dec.records)), n)  # repeat to fill a batch
            masks = dec.masks[idx] if with_masks else None
            return dec.images[idx], dec.labels[idx], masks, f"{data_dir.name} ({len(dec.records)} images, repeated)"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    labels = np.arange(n) % max(2, len(meta.get("classes", [])) or 2)
    masks = (torch.rand(n, 1, h, w, generator=g) > 0.5).to(torch.uint8) if with_masks else None
    return images, labels, masks, "synthetic uint8"


def bench_training(bundle_dir: Path, device: str, steps: int, batch_size: int | None, data_dir: Path | None) -> dict:
    """The steps of model.training.fit for a few batches: augment, normalise, forward, loss,
    backward, gradient clipping, optimiser and schedule step (and EMA when the bundle used it)."""
    import torch
    import torch.nn.functional as F
    from model.bundle import build_from_meta, read_meta
    from model.preprocess import AUGMENT_STRENGTHS, augment_batch, normalize
    from model.training import EMA, class_weights, dice_bce_loss, make_optimizer, make_scheduler

    meta = read_meta(bundle_dir)
    cfg = meta.get("train_config", {})
    segment = meta["task"] == "segment"
    dev = torch.device(device)
    bs = int(batch_size or cfg.get("batch_size") or 64)
    images, labels, masks, source = _training_data(meta, bs * 2, data_dir, segment)
    torch.manual_seed(0)
    model = build_from_meta(meta)
    channels_last = dev.type == "cuda"
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format).train()
    opt = make_optimizer(model, cfg.get("opt", "adamw"), float(cfg.get("lr", 2e-3)), float(cfg.get("weight_decay", 0.05)))
    sched = make_scheduler(opt, "cosine", 1, steps + 1, 0.0)
    ema = EMA(model, float(cfg["ema"])) if float(cfg.get("ema") or 0) > 0 else None
    strength = AUGMENT_STRENGTHS.get(cfg.get("augment", "medium"), 1.0)
    images, labels_t = images.to(dev), torch.as_tensor(labels, device=dev)
    masks = masks.to(dev) if masks is not None else None
    weights = None if segment else class_weights(labels, len(meta["classes"])).to(dev)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps + 1):  # step 0 is the warm-up
        clk = Clock(dev)
        idx = torch.as_tensor(rng.choice(len(images), bs, replace=False), device=dev)
        x = images[idx].float().div_(255)
        target = masks[idx].float() if segment else labels_t[idx]
        x, t_aug = augment_batch(x, strength, gen, target if segment else None)
        if segment:
            target = (t_aug > 0.5).float()
        x = normalize(x * 255, meta["mean"], meta["std"], channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = model(x).float()
        loss = dice_bce_loss(out, target) if segment else F.cross_entropy(out, target, weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        float(loss.detach())
        ms = clk.lap()
        if step > 0:
            times.append(ms)
        log(f"  [{device}] training {meta['task']} step {step}/{steps}{' (warm-up)' if step == 0 else ''}: "
            f"{ms:.0f} ms for {bs} images")
    ips = [bs / (t / 1000) for t in times]
    return {"arch": meta["arch"], "input_size": meta["input_size"], "batch_size": bs, "steps_timed": len(times),
            "data": source, "ema": ema is not None, "images_per_s": summarize(ips), "ms_per_step": summarize(times),
            "torch_threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- targets and report
def evaluate_targets(results: dict) -> list[dict]:
    cpu = results.get("devices", {}).get("cpu")
    m = results["machine"]
    cores_note = (f"measured with {m['torch_threads']} torch threads on {m['cpus_usable']} usable CPUs "
                  f"(target stated for 2 cores); load average at start {m['loadavg_at_start'][0]}")
    rows = []

    def add(name, value, threshold, better, unit):
        ok = None if value is None else (value >= threshold if better == "higher" else value <= threshold)
        rows.append({"target": name, "value": value, "threshold": threshold, "unit": unit, "pass": ok,
                     "note": cores_note})

    ana = (cpu or {}).get("analysis", {})
    add("full analysis speed-up vs naive (median)", ana.get("speedup_median"), TARGETS["speedup_vs_naive"], "higher", "x")
    add("full analysis median latency", (ana.get("fast", {}).get("total") or {}).get("median"),
        TARGETS["analysis_median_ms"], "lower", "ms")
    add("batch review throughput without CAM (median)",
        ((cpu or {}).get("batch", {}).get("images_per_s") or {}).get("median"), TARGETS["batch_images_per_s"],
        "higher", "images/s")
    agree = ana.get("agreement", {}).get("ok")
    rows.append({"target": "fast and naive outputs agree", "value": agree, "threshold": True, "unit": "",
                 "pass": agree, "note": "probabilities, CAM class, 6 CAMs, feature maps, masks"})
    return rows


def _fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


STAGE_ORDER = ["load_models", "decode_resize", "classify", "cam_backward", *[f"cam:{m}" for m in ALL_METHODS],
               "tta", "feature_maps", "segment", "measure", "quality", "render", "total"]
STAGE_LABELS = {"load_models": "reload both bundles from disk", "decode_resize": "decode + resize + normalise",
                "classify": "classify (forward pass)", "cam_backward": "CAM backward pass (shared)",
                "tta": "TTA (3 flipped views)", "feature_maps": "feature maps", "segment": "segmentation",
                "measure": "measurements", "quality": "quality / OOD checks",
                "render": "rendering (colourise + overlay)", "total": "**total**"}


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Benchmark `{results['created']}` on {m['cpu_model']}, {m['cpus_usable']} usable CPUs, "
             f"{m['torch_threads']} torch threads, torch {m['torch']}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "")
             + f"; load average at start {', '.join(str(x) for x in m['loadavg_at_start'])}.", ""]
    if m.get("load_warning"):
        lines += [f"**Warning:** {m['load_warning']}.", ""]
    for dev, r in results["devices"].items():
        ana = r.get("analysis")
        if ana:
            s = ana["settings"]
            lines += [f"### Single-image analysis on {dev} ({len(s['images'])} images, {s['repeats']} repeats; "
                      f"{len(s['cam_methods'])} CAM methods, TTA, feature maps, segmentation)", "",
                      "| stage | fast median ms | fast p95 ms | naive median ms | naive p95 ms |",
                      "|---|---:|---:|---:|---:|"]
            fast, naive = ana["fast"], ana.get("naive", {})
            keys = [k for k in STAGE_ORDER if k in fast or k in naive]
            naive_by = {**naive}
            for k in keys:
                label = STAGE_LABELS.get(k, k.replace("cam:", "CAM: "))
                f, n = fast.get(k, {}), naive_by.get(k, {})
                lines.append(f"| {label} | {_fmt(f.get('median'))} | {_fmt(f.get('p95'))} | "
                             f"{_fmt(n.get('median'))} | {_fmt(n.get('p95'))} |")
            if "speedup_median" in ana:
                ag = ana["agreement"]
                lines += ["", f"Speed-up (median total, naive / fast): **{ana['speedup_median']}x** "
                          f"({ana['speedup_median_excluding_naive_model_reload']}x if the naive pipeline kept its "
                          f"models loaded). Outputs agree: **{'yes' if ag['ok'] else 'NO'}** (probabilities max "
                          f"|diff| {ag['prob_max_abs_diff']:.1e}; CAM min correlation "
                          + ", ".join(f"{k} {_fmt(v.get('min_corr_up_to_sign', v['min_corr']), 4)}"
                                      + (" up to sign" if any("sign" in n for n in v.get("notes", [])) else "")
                                      for k, v in ag["cams"].items())
                          + (f"; masks identical: {ag['masks_identical']}" if "masks_identical" in ag else "") + ")."]
            lines.append("")
        b = r.get("batch")
        if b:
            lines += [f"Batch review on {dev} (classify_many, no CAM, {b['images']} JPEGs, batch {b['batch_size']}): "
                      f"**{_fmt(b['images_per_s']['median'])} images/s** median "
                      f"({_fmt(b['ms_per_image']['median'])} ms per image).", ""]
        c = r.get("cold_start")
        if c:
            lines += [f"Cold start on {dev} (fresh process to first full result): **{c['process_wall_s']:.2f} s** = "
                      f"imports {c['import_s']:.2f} s"
                      + (f" (+ streamlit {c['import_streamlit_s']:.2f} s)" if c.get("import_streamlit_s") is not None else "")
                      + f", model load {c['load_s']:.2f} s, first analysis {c['first_analysis_s']:.2f} s, "
                      "rest interpreter start.", ""]
        tr = r.get("training")
        if tr:
            lines += [f"Training throughput on {dev}:", "", "| task | arch | input | batch | images/s (median) | ms/step |",
                      "|---|---|---|---:|---:|---:|"]
            for task, t in tr.items():
                lines.append(f"| {task} | {t['arch']} | {t['input_size'][0]}x{t['input_size'][1]} | {t['batch_size']} | "
                             f"{_fmt(t['images_per_s']['median'])} | {_fmt(t['ms_per_step']['median'], 0)} |")
            lines.append("")
    if results.get("targets"):
        lines += ["| target | value | threshold | pass |", "|---|---:|---:|---|"]
        for t in results["targets"]:
            v = t["value"]
            vs = _fmt(v, 2) if isinstance(v, float) else str(v)
            thr = t["threshold"]
            thr_s = (f"≥ {thr}" if "speed" in t["target"] or "throughput" in t["target"] else
                     f"≤ {thr}" if "latency" in t["target"] else str(thr))
            lines.append(f"| {t['target']} | {vs} {t['unit']} | {thr_s} {t['unit']} | "
                         f"{'PASS' if t['pass'] else 'not measured' if t['pass'] is None else 'FAIL'} |")
        lines += ["", f"_{results['targets'][0]['note']}._"]
    return "\n".join(lines) + "\n"


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models",
                    help="folder with classifier/ (and segmenter/) bundles")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the image set")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--markdown", type=Path, help="also write the markdown summary to this file")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: CPU, and the GPU too when CUDA is available")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--images", nargs="*", default=list(DEFAULT_IMAGE_GLOBS), help="image files or globs")
    ap.add_argument("--max-images", type=int, help="use at most this many images")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="CAM methods, comma-separated")
    ap.add_argument("--batch-images", type=int, default=64, help="images per batch-review run")
    ap.add_argument("--batch-size", type=int, default=32, help="classify_many batch size")
    ap.add_argument("--cold-runs", type=int, default=2, help="fresh processes for the cold-start measurement")
    ap.add_argument("--train-steps", type=int, default=3, help="timed training steps per task (after 1 warm-up)")
    ap.add_argument("--train-batch", type=int, help="training batch size (default: the bundle's train_config)")
    ap.add_argument("--train-data", type=Path, default=REPO / "tests" / "data" / "ham_small",
                    help="images for the training measurement (synthetic if absent)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: naive,batch,cold,train")
    return ap.parse_args(argv)


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from model import tv_compat  # noqa: F401
    from model.pipeline import Analyzer

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise SystemExit(f"unknown CAM methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    models = args.models if args.models.is_absolute() else (Path.cwd() / args.models)
    if not (models / "classifier" / "meta.json").is_file():
        raise SystemExit(f"No classifier bundle in {models / 'classifier'} (use --models).")
    images = find_images(args.images)[: args.max_images or None]
    if not images:
        raise SystemExit(f"No images found for {args.images}.")
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda but CUDA is not available.")
        devices = [args.device]
    results = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(torch),
               "config": {"models": str(models), "repeats": args.repeats, "images": [str(p) for p in images],
                          "methods": methods, "skip": sorted(skip), "argv": sys.argv[1:]},
               "devices": {}}
    busy = results["machine"]["loadavg_at_start"][0]
    if busy > 0.5:
        results["machine"]["load_warning"] = (
            f"load average {busy} at start: other processes were using the CPU, so these timings are "
            "inflated (badly so when torch threads + other busy processes exceed the cores); rerun on an idle machine")
        log("WARNING: " + results["machine"]["load_warning"])
    log(f"benchmark: {len(images)} images x {args.repeats} repeats on {', '.join(devices)}; "
        f"{torch.get_num_threads()} torch threads; load average {results['machine']['loadavg_at_start']}")
    fns = _render_functions()
    for dev in devices:
        log(f"[{dev}] loading models from {models}")
        analyzer = Analyzer.from_dir(models, dev)
        r: dict = {"torch_threads": torch.get_num_threads()}
        results["devices"][dev] = r
        log(f"[{dev}] single-image analysis (fast{'' if 'naive' in skip else ' and naive, interleaved'})")
        r["analysis"] = bench_analysis(analyzer, models, images, max(1, args.repeats), methods, dev, fns,
                                       naive="naive" not in skip)
        if "batch" not in skip:
            log(f"[{dev}] batch review throughput")
            r["batch"] = bench_batch(analyzer, images, args.batch_images, args.batch_size, args.repeats, dev)
        if "cold" not in skip:
            log(f"[{dev}] cold start")
            r["cold_start"] = bench_cold_start(models, images[0], dev, methods, args.cold_runs)
        if "train" not in skip:
            r["training"] = {}
            for part in ("classifier", "segmenter"):
                if (models / part / "meta.json").is_file():
                    log(f"[{dev}] training throughput: {part}")
                    r["training"][part] = bench_training(models / part, dev, args.train_steps, args.train_batch,
                                                         args.train_data)
        del analyzer
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = evaluate_targets(results)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    results = run_benchmark(args)
    md = to_markdown(results)
    write_json(args.out, results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
    print(md)
    log(f"results written to {args.out}" + (f" and {args.markdown}" if args.markdown else ""))
    agree = results["devices"].get("cpu", results["devices"].get("cuda", {})).get("analysis", {}).get("agreement")
    if agree and not agree["ok"]:
        log("WARNING: the fast and naive pipelines disagree; see 'agreement' in the JSON.")
        return 1
    return 0
