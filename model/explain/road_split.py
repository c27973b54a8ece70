"""ROAD faithfulness over a split, per CAM method and layer, into the bundle's model card.

    python -m model.cli.faithfulness BUNDLE --data DIR [--split test] [--limit N] [--workers 2]
                                 [--cache FILE] [--time-limit SECONDS] [--layers ...]

Images go in a seeded random order; with `--cache` every finished image's scores are appended to a
JSON-lines file (tied to the weights' hash and the ROAD settings; `.gz` for a gzip one), so a
stopped run (Ctrl-C, or `--time-limit`) continues where it stopped and the figures can grow over
several runs. The shipped classifier keeps its per-image scores beside its weights
(`faithfulness-scores.jsonl.gz`): the model card's means can be checked and extended from them. The rows
written to meta.json say how many images each mean covers; rows of layers or methods not run this
time are kept when they were measured on the same split with the same settings.
"""
from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

try:
    import fcntl
except ImportError:  # not POSIX: one writing process at a time
    fcntl = None

import numpy as np
import torch
from tqdm import tqdm

from model.nets.bundle import Bundle, load_bundle
from model.nets.classifier import feature_layers
from model.explain.road import PERCENTILES, SEED, layer_cams, road_many
from model.explain.attention import attention_on_lesion
from model.data.preprocess import ImageError, decode_image, normalize, read_mask, resize_map, to_uint8_batch

METRIC = "ROAD (pytorch_grad_cam.metrics.road, noisy linear imputation)"


def weights_key(bundle: Bundle, percentiles: Sequence[int]) -> str:
    """What a cached score depends on: the weights, the ROAD percentiles and the noise seed."""
    from model.nets.weights_hash import weights_sha256

    h = weights_sha256(bundle.path)[:16]
    return f"{h}/p{'-'.join(map(str, percentiles))}/s{SEED}"


def image_scores(bundle: Bundle, forward, record, methods: Sequence[str], layers: Sequence[str],
                 percentiles: Sequence[int]) -> list[dict] | None:
    """One image's ROAD / MoRF / LeRF and heat-in-lesion share per (method, layer); None if unreadable."""
    try:
        rgb = decode_image(record.image_path)
        mask = read_mask(record.mask_path) if record.mask_path is not None else None
    except (ImageError, OSError, ValueError):
        return None
    names = feature_layers(bundle.model)
    x = normalize(to_uint8_batch([rgb], bundle.input_size, bundle.domain), bundle.mean, bundle.std)
    cams, cls = layer_cams(bundle, x, methods, [names.index(l) for l in layers])
    scores = road_many(forward, x, cams, cls, bundle.temperature, percentiles)
    rows = []
    for (m, li), s in scores.items():
        share = None
        if mask is not None:
            share = attention_on_lesion(np.clip(resize_map(cams[(m, li)], mask.shape), 0, 1), mask)
        rows.append({"image": record.image_id, "method": m, "layer": names[li], "road": s["road"],
                     "morf": s["morf"], "lerf": s["lerf"], "share": share})
    return rows


def _reader(path: Path):
    """A cache file to read: plain JSON lines, or gzip (`.gz`: each append is one more gzip member)."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def append(path: Path, text: str) -> None:
    """Add one image's lines as one write under an exclusive lock: worker processes share the file,
    and a killed run leaves whole images (for `.gz`, one whole gzip member per image)."""
    data = gzip.compress(text.encode("utf-8")) if path.suffix == ".gz" else text.encode("utf-8")
    with path.open("ab") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(data)
            f.flush()
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def read_cache(path: Path | None, key: str) -> list[dict]:
    """Cached rows for this key (other keys' lines, and a torn last write, are ignored)."""
    if path is None or not path.exists():
        return []
    rows = []
    with _reader(path) as f:
        while True:
            try:
                line = f.readline()
            except (EOFError, OSError):  # a gzip member cut short by a killed run: keep what came before
                break
            if not line:
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("key") == key:
                rows.append(row)
    return rows


def _worker(job) -> list[dict]:
    bundle_dir, records, methods, layers, percentiles, cache, key, deadline, progress, parent = job
    torch.set_num_threads(1)
    rows = _run(load_bundle(bundle_dir), records, methods, layers, percentiles, cache, key, deadline, progress,
                parent)
    if os.getppid() != parent:  # orphaned: nobody to hand the rows to (the cache has them), so leave
        os._exit(0)
    return rows


def _run(bundle: Bundle, records, methods, layers, percentiles, cache: Path | None, key: str,
         deadline: float | None, progress: bool, parent: int | None = None) -> list[dict]:
    from model.nets.engine import engine_for

    forward = engine_for(bundle)  # the perturbed copies need no gradient
    out = []
    for r in tqdm(records, desc="faithfulness", disable=not progress, mininterval=5):
        if deadline is not None and time.time() > deadline:
            break
        if parent is not None and os.getppid() != parent:  # the run was killed: do not go on alone
            break
        rows = image_scores(bundle, forward, r, methods, layers, percentiles)
        if rows is None:
            continue
        rows = [{"key": key, **row} for row in rows]
        if cache is not None:
            append(cache, "".join(json.dumps(row) + "\n" for row in rows))
        out.extend(rows)
    return out


def compute(bundle: Bundle, records, methods: Sequence[str], layers: Sequence[str],
            percentiles: Sequence[int] = PERCENTILES, workers: int = 1, cache: Path | None = None,
            time_limit: float | None = None, progress: bool = True) -> list[dict]:
    """Per-image rows for `records` (cached ones are read, not recomputed), images in the given order;
    `workers` > 1 deals the images round-robin to that many processes (one thread each)."""
    key = weights_key(bundle, percentiles)
    want = {(m, l) for m in methods for l in layers}
    cached = [r for r in read_cache(cache, key) if (r["method"], r["layer"]) in want]
    done: dict[str, set] = {}
    for r in cached:
        done.setdefault(r["image"], set()).add((r["method"], r["layer"]))
    todo = [r for r in records if done.get(r.image_id, set()) != want]
    deadline = time.time() + time_limit if time_limit else None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        parts = [todo[i::workers] for i in range(workers)]
        jobs = [(bundle.path, part, tuple(methods), tuple(layers), tuple(percentiles), cache, key, deadline,
                 progress and i == 0, os.getpid()) for i, part in enumerate(parts) if part]
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            new = [row for res in pool.map(_worker, jobs) for row in res]
    else:
        new = _run(bundle, todo, methods, layers, percentiles, cache, key, deadline, progress)
    ids = {r.image_id for r in records}
    fresh = {(r["image"], r["method"], r["layer"]) for r in new}
    return [r for r in cached if r["image"] in ids and (r["image"], r["method"], r["layer"]) not in fresh] + new


def aggregate(rows: Iterable[dict]) -> list[dict]:
    """Mean ROAD / MoRF / LeRF (with ROAD's standard error) and heat-in-lesion share per (method, layer)."""
    acc: dict[tuple[str, str], dict[str, list]] = {}
    seen = set()
    for r in rows:
        if (r["image"], r["method"], r["layer"]) in seen:
            continue
        if not all(np.isfinite(r[k]) for k in ("road", "morf", "lerf")) or \
                (r.get("share") is not None and not np.isfinite(r["share"])):
            continue  # a heatmap with non-finite values has no score (seen once, from Grad-CAM++ in float32)
        seen.add((r["image"], r["method"], r["layer"]))
        a = acc.setdefault((r["method"], r["layer"]), {"road": [], "morf": [], "lerf": [], "share": []})
        for k in ("road", "morf", "lerf"):
            a[k].append(r[k])
        if r.get("share") is not None:
            a["share"].append(r["share"])
    out = []
    for (m, l), a in acc.items():
        n = len(a["road"])
        out.append({"method": m, "layer": l, "n": n,
                    **{k: round(float(np.mean(a[k])), 4) for k in ("road", "morf", "lerf")},
                    "road_sem": round(float(np.std(a["road"], ddof=1) / np.sqrt(n)), 4) if n > 1 else None,
                    "heat_in_lesion": round(float(np.mean(a["share"])), 4) if a["share"] else None})
    return out


def markdown_table(rows: list[dict], layers: Sequence[str]) -> str:
    """The lab notes' table: ROAD ± s.e. (heat-in-lesion share) per method (rows) and layer (columns)."""
    from model.labels import CAM_METHOD_NAMES

    cell = {(r["method"], r["layer"]): r for r in rows}
    layers = [l for l in layers if any(k[1] == l for k in cell)]
    methods = [m for m in CAM_METHOD_NAMES if any(k[0] == m for k in cell)]
    n = {l: sorted({cell[k]["n"] for k in cell if k[1] == l}) for l in layers}
    head = " | ".join(f"{l} (n={n[l][0]}" + (f"-{n[l][-1]}" if len(n[l]) > 1 else "") + ")" for l in layers)
    out = [f"| ROAD ± s.e. (heat on lesion) | {head} |", "|---|" + "---:|" * len(layers)]
    for m in methods:
        cells = []
        for l in layers:
            r = cell.get((m, l))
            if r is None:
                cells.append("–")
                continue
            sem = f" ± {r['road_sem']:.3f}" if r.get("road_sem") is not None else ""
            share = f" ({r['heat_in_lesion']:.2f})" if r.get("heat_in_lesion") is not None else ""
            cells.append(f"{r['road']:+.3f}{sem}{share}")
        out.append(f"| {CAM_METHOD_NAMES[m]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def ordered(records, limit: int | None, seed: int = SEED) -> list:
    """A fixed seeded subset (or all), in a fixed seeded order: whatever prefix a time-limited run
    gets through is a random sample of the split, and the same one on every machine."""
    records = sorted(records, key=lambda r: r.image_id)
    rng = np.random.default_rng(seed)
    if limit and limit < len(records):
        records = [records[i] for i in sorted(rng.choice(len(records), size=limit, replace=False))]
    return [records[i] for i in np.random.default_rng(seed + 1).permutation(len(records))]


def merged_rows(old: dict | None, new_rows: list[dict], same_settings: bool) -> list[dict]:
    """New rows, plus the old figure's rows for (method, layer) pairs not measured this time."""
    if not old or not same_settings:
        return new_rows
    fresh = {(r["method"], r["layer"]) for r in new_rows}
    return [r for r in old.get("rows", []) if (r["method"], r["layer"]) not in fresh] + new_rows


def coverage(rows: list[dict], split_size: int, split: str) -> str | None:
    """How much of the split the rows cover, in words (None: every row has the whole split)."""
    ns = sorted({r["n"] for r in rows})
    if ns == [split_size]:
        return None
    if len(ns) == 1:
        return f"seeded random subset of {ns[0]} of {split_size} {split} images"
    if ns[-1] == split_size:
        rest = f"a seeded random subset of {ns[0]}" if len(ns) == 2 else f"seeded random subsets of {ns[0]}-{ns[-2]}"
        return (f"the whole {split} split ({split_size} images) for some rows, {rest} images for the others "
                "(images per row in the table)")
    return f"seeded random subsets of {ns[0]}-{ns[-1]} of {split_size} {split} images (images per row in the table)"
