"""The shipped networks alone: weights file size, parameters, and the plain forward pass of one
image at the bundle's input size (no CAM, no TTA), as `python -m bench` reports them."""
from __future__ import annotations

import time
from pathlib import Path

from bench.common import summarize

MAX_WEIGHTS_MB = 10.0


def bench_models(models: Path, device: str, repeats: int = 30) -> dict:
    """{part: {arch, weights_mb, parameters, forward_ms}} for classifier/ and segmenter/."""
    import torch

    from model.nets.bundle import WEIGHTS, load_bundle
    from model.data.preprocess import normalize

    out = {}
    for part in ("classifier", "segmenter"):
        folder = models / part
        if not (folder / "meta.json").is_file():
            continue
        bundle = load_bundle(folder, device)
        h, w = bundle.input_size
        x = normalize(torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8).to(device), bundle.mean, bundle.std)
        times = []
        with torch.inference_mode():
            for i in range(repeats + 3):
                t0 = time.perf_counter()
                bundle.model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                if i >= 3:  # warm-up
                    times.append((time.perf_counter() - t0) * 1000)
        out[part] = {"arch": bundle.meta["arch"], "input_size": [h, w],
                     "weights_mb": round((folder / WEIGHTS).stat().st_size / 2**20, 2),
                     "parameters": sum(p.numel() for p in bundle.model.parameters()),
                     "forward_ms": summarize(times)}
    return out
