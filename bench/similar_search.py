"""Similar-cases speed: one query against a simulated 30,000-image reference set (ISIC 2019's
size: the shipped index's embeddings repeated with a little noise), with a plain numpy matrix
product and with FAISS (`faiss-cpu`, exact inner-product index) when it is installed; and what
the stage adds to one analysis (`similar_and_sets` in Analysis.timings_ms).

    python -m bench.similar_search [--models assets/models] [--n 30000] [--queries 200] [--threads N] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _times(fn, queries: np.ndarray) -> dict:
    fn(queries[:1])  # warm-up
    ms = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None])
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3)}


def simulated(index_embeddings: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n unit vectors: the real embeddings tiled, each copy jittered so no two rows are equal."""
    rng = np.random.default_rng(seed)
    reps = -(-n // len(index_embeddings))
    x = np.tile(index_embeddings, (reps, 1))[:n] + rng.normal(0, 0.02, (n, index_embeddings.shape[1])).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_search(emb: np.ndarray, n: int, n_queries: int, k: int = 6) -> dict:
    ref = simulated(emb, n)
    queries = simulated(emb, n_queries, seed=1)
    out = {"n": n, "dims": int(emb.shape[1]), "k": k}

    from model.aids.similar import similarities

    def top_k(s):
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        return np.take_along_axis(s, idx, 1)

    out["numpy_matmul"] = _times(lambda q: top_k(q @ ref.T), queries)                  # BLAS, its own threads
    out["numpy_einsum"] = _times(lambda q: top_k(similarities(q, ref)), queries)       # what the app runs
    try:
        import faiss
    except ImportError:
        out["faiss"] = "not installed (pip install faiss-cpu==1.15.1)"
    else:
        index = faiss.IndexFlatIP(ref.shape[1])
        index.add(np.ascontiguousarray(ref))
        out["faiss"] = {"version": faiss.__version__, "index": "IndexFlatIP (exact)",
                        **_times(lambda q: index.search(np.ascontiguousarray(q), k), queries)}
    return out


def bench_stage(models: Path, images: list[Path]) -> dict:
    """The similar-cases + prediction-set stage inside Analyzer.analyze on real images."""
    import model.nets.tv_compat  # noqa: F401
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(models)
    analyzer.analyze(images[0].read_bytes(), segment=False)  # warm-up
    ms = [analyzer.analyze(p.read_bytes(), segment=False).timings_ms["similar_and_sets"] for p in images * 3]
    return {"images": len(images), "runs": len(ms), "median_ms": round(statistics.median(ms), 3),
            "max_ms": round(max(ms), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.similar_search", description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--n", type=int, default=30_000, help="simulated reference-set size")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "similar-search.json")
    ap.add_argument("--threads", type=int, help="BLAS / OpenMP / torch threads (default: the libraries' own)")
    args = ap.parse_args(argv)
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise SystemExit("--threads needs threadpoolctl (pip install threadpoolctl)") from None
        threadpool_limits(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    from model.aids.similar import ReferenceIndex
    import model.nets.tv_compat  # noqa: F401
    from model.nets.bundle import read_meta

    cls_dir = args.models / "classifier"
    meta = read_meta(cls_dir)
    index = ReferenceIndex.load(cls_dir, meta["classes"])
    full = np.random.default_rng(2).normal(size=(len(index), index.pca.shape[0])).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "threads": args.threads,
              "loadavg_at_start": list(os.getloadavg()),
              "index": bench_search(index.embeddings, args.n, args.queries),
              "full_features": bench_search(full, args.n, args.queries),
              "stage": bench_stage(args.models, sorted((REPO / "assets" / "examples").glob("*.jpg")))}
    result["loadavg_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name in ("index", "full_features"):
        r = result[name]
        faiss_ms = r["faiss"]["median_ms"] if isinstance(r["faiss"], dict) else r["faiss"]
        print(f"{r['n']} x {r['dims']}: numpy matmul {r['numpy_matmul']['median_ms']} ms (p95 "
              f"{r['numpy_matmul']['p95_ms']}), einsum (the app's) {r['numpy_einsum']['median_ms']} ms (p95 "
              f"{r['numpy_einsum']['p95_ms']}), faiss {faiss_ms} ms")
    print(f"stage in Analyzer.analyze: median {result['stage']['median_ms']} ms, max {result['stage']['max_ms']} ms")
    print(f"load average {result['loadavg_at_start']} -> {result['loadavg_at_end']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
