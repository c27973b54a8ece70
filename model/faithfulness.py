"""Is a heatmap what the model used? ROAD faithfulness scores for CAMs (Rong et al., ICML 2022).

pytorch-grad-cam's `pytorch_grad_cam.metrics.road` removes the pixels a CAM ranks most relevant
(MoRF) or least relevant (LeRF) and fills them by noisy linear imputation from their neighbours
(so the removal leaves no tell-tale shape). We take its perturbation classes as they are and run
all perturbed copies of one image in one batched forward pass:

- `morf`: mean change of the explained class's calibrated probability when the most relevant
  10-90% of pixels are removed (more negative = the heat is where the evidence is);
- `lerf`: the same when the least relevant pixels are removed (near 0 = the cold parts did not matter);
- `road` = (lerf - morf) / 2, pytorch-grad-cam's `ROADCombined`: higher is more faithful.

    python -m model.faithfulness BUNDLE --data DIR [--split test] [--limit N]

averages them (and the share of heat in the reference lesion mask) over a split per CAM method
and layer, into BUNDLE/meta.json `interpretability.faithfulness`; the model card shows it. The app
computes them per image on request (`faithfulness`), never inside the analysis itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .bundle import Bundle, BundleError, load_bundle, update_meta
from .classifier import feature_layers
from .data import DatasetError
from .interpret import CAM_METHODS, forward_explain, scale_cam
from .measure import attention_on_lesion
from .preprocess import ImageError, decode_image, normalize, read_mask, resize_map, resize_rgb, to_uint8_batch

PERCENTILES = (10, 30, 50, 70, 90)   # CAM percentile thresholds: 90% .. 10% of the pixels removed
SEED = 0
_RNG_LOCK = threading.Lock()         # the imputer draws its noise from torch's global generator


class FastImputer:
    """pytorch-grad-cam's `NoisyLinearImputer`, with its sparse system assembled in COO form rather
    than by fancy-indexed writes into a `lil_matrix` (0.5 s of a 0.55 s imputation at 150x200).
    Same equations, same solver, same noise draws; tests check it against the library's own."""

    def __init__(self, noise: float = 0.01):
        self.noise = noise

    @staticmethod
    def system(mask: np.ndarray, img: np.ndarray):
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights
        from scipy.sparse import coo_matrix

        maskflt = mask.flatten()
        imgflat = img.reshape((img.shape[0], -1))
        indices = np.argwhere(maskflt == 0).flatten()
        to_var = np.zeros(len(maskflt), dtype=int)
        to_var[indices] = np.arange(len(indices))
        n = len(indices)
        b = np.zeros((n, img.shape[0]))
        sum_neighbors = np.ones(n)
        rows, cols, vals = [], [], []
        for offset, weight in neighbors_weights:
            valid, coords = NoisyLinearImputer.add_offset_to_indices(indices, offset, mask.shape)
            vc, vid = coords[valid], np.argwhere(valid == 1).flatten()
            known = maskflt[vc] > 0.5
            b[vid[known], :] -= weight * imgflat[:, vc[known]].T
            unknown = maskflt[vc] < 0.5
            rows.append(vid[unknown])
            cols.append(to_var[vc[unknown]])
            vals.append(np.full(int(unknown.sum()), weight))
            sum_neighbors[np.argwhere(valid == 0).flatten()] -= weight
        rows.append(np.arange(n))
        cols.append(np.arange(n))
        vals.append(-sum_neighbors)
        a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        return a.tocsc(), b

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from scipy.sparse.linalg import spsolve

        imgflt = img.reshape(img.shape[0], -1)
        indices = np.argwhere(mask.reshape(-1) == 0).flatten()
        a, b = self.system(mask.numpy(), img.numpy())
        res = torch.tensor(spsolve(a, b), dtype=torch.float).reshape(len(indices), -1)
        filled = imgflt.clone()
        filled[:, indices] = res.t() + self.noise * torch.randn_like(res.t())
        return filled.reshape_as(img)


def _perturbed(x: torch.Tensor, cam: np.ndarray, percentiles: Sequence[int]) -> torch.Tensor:
    """MoRF copies (one per percentile), then LeRF copies, of x (3xHxW), imputed as ROAD does."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (RemoveLeastRelevantFirst,
                                                                  RemoveMostRelevantFirst)

    cam_t = torch.from_numpy(np.ascontiguousarray(cam, np.float32))
    out = []
    with _RNG_LOCK, torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # the library turns a torch comparison into numpy with np.float32(tensor): numpy 2 warns
        warnings.filterwarnings("ignore", message="__array_wrap__", category=DeprecationWarning)
        torch.manual_seed(SEED)
        for kind in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst):
            for p in percentiles:
                out.append(kind(p, FastImputer())(x, cam_t))
    return torch.stack(out)


def road_scores(model: torch.nn.Module, x: torch.Tensor, cam: np.ndarray, cls: int, temperature: float = 1.0,
                percentiles: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """ROAD scores of one CAM (HxW in [0, 1], at x's size) for class `cls` of one image x (1x3xHxW)."""
    x = x.detach().float().cpu()
    batch = torch.cat([x, _perturbed(x[0], cam, percentiles)])
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(batch.to(device)).float().cpu()
    p = torch.softmax(logits / temperature, 1)[:, cls].numpy()
    k = len(percentiles)
    morf = float((p[1:1 + k] - p[0]).mean())
    lerf = float((p[1 + k:] - p[0]).mean())
    return {"road": round((lerf - morf) / 2, 4), "morf": round(morf, 4), "lerf": round(lerf, 4),
            "probability": round(float(p[0]), 4)}


def input_cams(bundle: Bundle, x: torch.Tensor, methods: Sequence[str], cam_class: int | None,
               layer: int) -> tuple[dict[str, np.ndarray], int]:
    """CAMs at the classifier's input size (scaled to [0, 1]) and the explained class index."""
    fwd = forward_explain(bundle.model, x, cam_class, layer, tuple(methods))
    size = tuple(bundle.input_size)
    return {m: np.clip(resize_map(scale_cam(c), size), 0, 1) for m, c in fwd.cams.items()}, fwd.cam_class


def faithfulness(bundle: Bundle, rgb: np.ndarray, methods: Sequence[str] = ("gradcam",),
                 cam_class: str | None = None, cam_layer: str | None = None,
                 percentiles: Sequence[int] = PERCENTILES) -> dict[str, dict[str, float]]:
    """ROAD scores per CAM method for one RGB uint8 image, as the app explains it (class: top by
    default; layer: the last stage by default). Thread-safe: nothing is registered on the model."""
    layers = feature_layers(bundle.model)
    layer = layers.index(cam_layer) if cam_layer else len(layers) - 1
    cls = bundle.classes.index(cam_class) if cam_class else None
    x = normalize(to_uint8_batch([resize_rgb(rgb, bundle.input_size)], bundle.input_size), bundle.mean, bundle.std)
    x = x.to(next(bundle.model.parameters()).device)
    cams, cls_idx = input_cams(bundle, x, methods, cls, layer)
    return {m: road_scores(bundle.model, x, cams[m], cls_idx, bundle.temperature, percentiles) for m in methods}


def _accumulate(bundle: Bundle, records, methods: Sequence[str], layers: Sequence[str],
                percentiles: Sequence[int], progress: bool) -> dict:
    """(method, layer) -> lists of per-image ROAD, MoRF, LeRF and heat-in-lesion shares."""
    names = feature_layers(bundle.model)
    acc = {(m, l): {"road": [], "morf": [], "lerf": [], "share": []} for m in methods for l in layers}
    for r in tqdm(list(records), desc="faithfulness", disable=not progress, mininterval=5):
        try:
            rgb = decode_image(r.image_path)
            mask = read_mask(r.mask_path) if r.mask_path is not None else None
        except (ImageError, OSError, ValueError):
            continue
        x = normalize(to_uint8_batch([rgb], bundle.input_size), bundle.mean, bundle.std)
        for l in layers:
            cams, cls = input_cams(bundle, x, methods, None, names.index(l))
            for m in methods:
                s = road_scores(bundle.model, x, cams[m], cls, bundle.temperature, percentiles)
                a = acc[(m, l)]
                for k in ("road", "morf", "lerf"):
                    a[k].append(s[k])
                if mask is not None:
                    share = attention_on_lesion(np.clip(resize_map(cams[m], mask.shape), 0, 1), mask)
                    if share is not None:
                        a["share"].append(share)
    return acc


def _worker(job) -> dict:
    bundle_dir, records, methods, layers, percentiles, progress = job
    torch.set_num_threads(1)
    return _accumulate(load_bundle(bundle_dir), records, methods, layers, percentiles, progress)


def split_figures(bundle: Bundle, records, methods: Sequence[str], layers: Sequence[str],
                  percentiles: Sequence[int] = PERCENTILES, progress: bool = True, workers: int = 1) -> list[dict]:
    """Mean ROAD / MoRF / LeRF and heat-in-lesion share per (method, layer) over `records`;
    `workers` > 1 splits the images over that many processes (each with one torch thread)."""
    records = list(records)
    if workers > 1 and len(records) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        parts = [records[i::workers] for i in range(workers)]
        jobs = [(bundle.path, part, tuple(methods), tuple(layers), tuple(percentiles), progress and i == 0)
                for i, part in enumerate(parts) if part]
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_worker, jobs))
        acc = {k: {f: sum((res[k][f] for res in results), []) for f in results[0][k]} for k in results[0]}
    else:
        acc = _accumulate(bundle, records, methods, layers, percentiles, progress)
    rows = []
    for (m, l), a in acc.items():
        if not a["road"]:
            continue
        rows.append({"method": m, "layer": l, "n": len(a["road"]),
                     **{k: round(float(np.mean(a[k])), 4) for k in ("road", "morf", "lerf")},
                     "road_sem": round(float(np.std(a["road"], ddof=1) / np.sqrt(len(a["road"]))), 4)
                     if len(a["road"]) > 1 else None,
                     "heat_in_lesion": round(float(np.mean(a["share"])), 4) if a["share"] else None})
    return rows


def pick_subset(records, limit: int | None, seed: int = SEED):
    """A fixed, seeded subset (sorted by image id first, so it does not depend on file order)."""
    records = sorted(records, key=lambda r: r.image_id)
    if not limit or limit >= len(records):
        return records
    idx = np.random.default_rng(seed).choice(len(records), size=limit, replace=False)
    return [records[i] for i in sorted(idx)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.faithfulness", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, help="classifier bundle (its split.json chooses the images)")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (masks give the heat-in-lesion share)")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--methods", nargs="+", default=list(CAM_METHODS), choices=list(CAM_METHODS))
    ap.add_argument("--layers", nargs="+", help="layer names (default: every stage the app offers)")
    ap.add_argument("--limit", type=int, help="a fixed seeded subset of this many images (default: all)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--workers", type=int, default=1, help="processes to split the images over (one thread each)")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write meta.json")
    args = ap.parse_args(argv)
    from .evaluate import records_for_split

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bundle = load_bundle(args.bundle)
        layers = args.layers or feature_layers(bundle.model)
        unknown = [l for l in layers if l not in feature_layers(bundle.model)]
        if unknown:
            raise BundleError(f"unknown layers {unknown}; this model has {feature_layers(bundle.model)}")
        all_records = records_for_split(args.bundle, args.data, args.split)
        records = pick_subset(all_records, args.limit, args.seed)
        start = time.perf_counter()
        rows = split_figures(bundle, records, args.methods, layers, progress=True, workers=args.workers)
    except (BundleError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in sorted(rows, key=lambda r: -r["road"]):
        print(f"{r['method']:10s} {r['layer']:10s} ROAD {r['road']:+.4f}  MoRF {r['morf']:+.4f}  LeRF {r['lerf']:+.4f}  "
              f"heat in lesion {r['heat_in_lesion'] if r['heat_in_lesion'] is not None else '-'}  (n={r['n']})")
    fig = {"metric": "ROAD (pytorch_grad_cam.metrics.road, noisy linear imputation)", "percentiles": list(PERCENTILES),
           "score": "calibrated probability of the top class", "split": args.split,
           "n_images": len(records), "split_size": len(all_records),
           "subset": (f"fixed random subset of {len(records)} of {len(all_records)} {args.split} images "
                      f"(seed {args.seed})") if len(records) < len(all_records) else None,
           "split_hash": bundle.meta.get("split", {}).get("hash"), "arch": bundle.meta["arch"],
           "created": bundle.meta.get("created"), "seconds": round(time.perf_counter() - start, 1),
           "command": "python -m model.faithfulness " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": rows}
    if not args.dry_run:
        current = json.loads((args.bundle / "meta.json").read_text())  # as it is now, not as loaded
        update_meta(args.bundle, interpretability={**current.get("interpretability", {}), "faithfulness": fig})
    return 0


if __name__ == "__main__":
    sys.exit(main())
