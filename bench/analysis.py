"""Timed single-image analysis (fast and naive, interleaved) and batch-review throughput."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Sequence

from bench.agreement import compare_outputs, merge_agreement
from bench.common import Clock, log, summarize
from bench.rendering import render


def cam_breakdown(analyzer, data: bytes, methods: Sequence[str], clock_device) -> dict[str, float]:
    """Own timers inside the one-pass CAM step (the pipeline reports it as one number):
    the forward pass (prediction + activations), the one backward pass the gradient methods
    share, and each method's formula plus its scaling/resizing to the image."""
    import torch
    from model.explain.cams import method_cam, cam_at
    from model.data.preprocess import decode_image, normalize, to_uint8_batch

    b = analyzer.classifier
    rgb = decode_image(data)
    x = normalize(to_uint8_batch([rgb], b.input_size, b.domain).to(analyzer.device), b.mean, b.std)
    layer = len(analyzer.layers) - 1
    t: dict[str, float] = {}
    clk = Clock(clock_device)
    if analyzer.engine.kind != "torch" and analyzer.last_cam.supported:   # the engine's forward-only path
        out = analyzer.engine(x, ["logits", "features", f"stage{layer}"])
        t["classify"] = clk.lap()
        a = torch.as_tensor(out[f"stage{layer}"][0]).float()
        cls = int(out["logits"][0].argmax())
        grads = analyzer.last_cam.head_gradient(a, cls) if any(m != "eigencam" for m in methods) else None
        t["cam_backward"] = clk.lap()
        for m in methods:
            cam_at(method_cam(m, a, grads), rgb.shape[:2])
            t[f"cam:{m}"] = clk.lap()
        return {k: round(v, 3) for k, v in t.items()}
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
        cam_at(method_cam(m, a, grads), rgb.shape[:2])
        t[f"cam:{m}"] = clk.lap()
    return {k: round(v, 3) for k, v in t.items()}


def settle() -> None:
    """Collect garbage, untimed, before a timed run of any pipeline. The naive reference reloads its
    models for every image and leaves reference cycles (pytorch-grad-cam's hooks hold their model);
    without this their collection, tens of MB freed, lands inside whichever run comes next: the
    engine path measured 45.6 ms instead of 33.3 ms that way (docs/inference-engine.md). Each path
    is charged its own work, as `timeit` does by switching the collector off."""
    gc.collect()


def bench_analysis(analyzer, models_dir: Path, images: list[Path], repeats: int, methods: Sequence[str],
                   device: str, fns, naive: bool = True, torch_analyzer=None) -> dict:
    """Fast and naive pipelines (and `torch_analyzer`, the same pipeline with every pass in torch)
    interleaved image by image (so background load hits them alike)."""
    from bench.naive import naive_analyze

    feature_layer = analyzer.layers[-1]
    opts = dict(cam_methods=tuple(methods), tta=True, feature_layer=feature_layer, n_feature_maps=16, segment=True)
    blobs = [(p.name, p.read_bytes()) for p in images]
    # warm-up (first calls allocate, pick kernels, import pytorch_grad_cam): not timed
    a = analyzer.analyze(blobs[0][1], **opts)
    render(fns, a.image, a.cams, a.lesion_mask, a.feature_maps.maps, a.feature_maps.channels)
    if naive:
        naive_analyze(models_dir, blobs[0][1], methods, tta=True, feature_layer=-1, device=device)
    if torch_analyzer is not None:
        torch_analyzer.analyze(blobs[0][1], **opts)
    torch_totals: list[float] = []
    fast_stages: dict[str, list[float]] = {}
    pipe_stages: dict[str, list[float]] = {}
    naive_stages: dict[str, list[float]] = {}
    agreement, per_image = [], []
    total_runs = repeats * len(blobs)
    k = 0
    for rep in range(repeats):
        for name, data in blobs:
            k += 1
            settle()
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
                elif key in a.parallel_ms:   # ran beside the classifier: its own time, overlapping
                    row[key] = a.parallel_ms[key]
            row["render"] = render_ms
            row["total"] = analyse_ms + render_ms
            for key, v in row.items():
                fast_stages.setdefault(key, []).append(v)
            line = f"  [{device}] {k}/{total_runs} {name}: fast {row['total']:.0f} ms"
            rec = {"image": name, "repeat": rep, "fast_ms": round(row["total"], 2)}
            if torch_analyzer is not None:
                settle()
                clk = Clock(device)
                ta = torch_analyzer.analyze(data, **opts)
                render(fns, ta.image, ta.cams, ta.lesion_mask, ta.feature_maps.maps, ta.feature_maps.channels,
                       ta.feature_maps.mean_activation)
                torch_totals.append(clk.lap())
                line += f", torch path {torch_totals[-1]:.0f} ms"
                rec["torch_path_ms"] = round(torch_totals[-1], 2)
            if naive:
                settle()
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
        "runtime": a.runtime,
    }
    if torch_totals:
        out["torch_path"] = {"total": summarize(torch_totals), "runtime": ta.runtime}
        out["speedup_vs_torch_path"] = round(out["torch_path"]["total"]["median"] / out["fast"]["total"]["median"], 2)
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
