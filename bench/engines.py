"""Every forward-only runtime side by side on the shipped networks: torch eager (NCHW), torch
channels_last, and each installed engine of model.nets.engine (ONNX Runtime, OpenVINO), at batch 1
and 4, same input, rounds interleaved (so background load hits all alike), with the largest
logit difference from torch eager."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import summarize


def _torch_runner(bundle, channels_last: bool):
    import torch

    model = bundle.model
    if channels_last:
        import copy

        model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(x):
        with torch.inference_mode():
            xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            return model(xin).float().numpy()
    return run


def bench_engines(models: Path, threads: int, repeats: int = 20, batches=(1, 4)) -> dict:
    """{part: {runtime: {"batch1": summary ms, "batch4": ..., "max_abs_diff": float, "label": str}}}."""
    import torch

    from model.nets.bundle import load_bundle
    from model.nets.engine import build_engine, installed
    from model.data.preprocess import normalize

    out = {}
    for part in ("classifier", "segmenter"):
        folder = models / part
        if not (folder / "meta.json").is_file():
            continue
        bundle = load_bundle(folder, "cpu")
        h, w = bundle.input_size
        g = torch.Generator().manual_seed(0)
        x = normalize(torch.randint(0, 256, (max(batches), 3, h, w), dtype=torch.uint8, generator=g),
                      bundle.mean, bundle.std)
        runners = {"torch eager (NCHW)": (_torch_runner(bundle, False), f"torch {torch.__version__}"),
                   "torch channels_last": (_torch_runner(bundle, True), f"torch {torch.__version__}")}
        notes = {}
        for kind in installed():
            if kind == "torch":
                continue
            try:
                eng = build_engine(bundle, kind, threads)
            except Exception as e:  # noqa: BLE001 - report, do not stop the benchmark
                notes[kind] = str(e)[:200]
                continue
            runners[kind] = ((lambda e: lambda xb: e(xb, ["logits"])["logits"])(eng), eng.label)
        ref = runners["torch eager (NCHW)"][0](x)
        res = {name: {"label": label, "max_abs_diff": float(np.abs(fn(x) - ref).max())}
               for name, (fn, label) in runners.items()}
        times = {(name, b): [] for name in runners for b in batches}
        for _ in range(repeats):
            for b in batches:
                xb = x[:b]
                for name, (fn, _) in runners.items():
                    t0 = time.perf_counter()
                    fn(xb)
                    times[(name, b)].append((time.perf_counter() - t0) * 1000)
        for (name, b), v in times.items():
            res[name][f"batch{b}"] = summarize(v[2:] if len(v) > 4 else v)   # first rounds: warm-up
        out[part] = {"arch": bundle.meta["arch"], "input_size": [h, w], "threads": threads, "runtimes": res,
                     "unavailable": notes}
    return out
