"""A bundle's network as a forward-only callable; hides which runtime runs it.

    fwd = engine_for(bundle)                 # once per process (cached), shared by all threads
    out = fwd(x, ["logits", "features"])     # x: N x 3 x H x W normalised (torch or numpy)
    out["logits"]                            # numpy float32

Runtimes, in the order `auto` tries them (chosen by measurement, docs/inference-engine.md):
ONNX Runtime, OpenVINO, then torch. The first two run the bundle's `model.onnx`
(`python -m model.cli.onnx_export BUNDLE`), which must carry the sha256 of the bundle's
`weights.safetensors`: a missing, stale or mismatched file is never run. Torch, the fallback,
runs the same outputs from the bundle's own model with identical results.

Settings, read when an engine is built (once per bundle in a process):
  DERMO_ENGINE=auto|openvino|onnxruntime|torch    (auto: the fastest one installed)
  DERMO_ENGINE_THREADS=N                          (default: torch's thread count, at most 4;
                                                   ONNX Runtime: N single-thread lanes, model.nets.lanes;
                                                   idle threads sleep, so Streamlit keeps its room)
Naming a runtime that cannot run a bundle raises EngineError with what to do; `auto` falls
back to torch and says why in `Forward.note`.
"""
from __future__ import annotations

import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model.nets.bundle import Bundle, BundleError
from model.nets.lanes import lanes_pool, run_parts
from model.nets.onnx_export import ONNX_FILE, output_names, weights_sha256

AUTO_ORDER = ("onnxruntime", "openvino")
KINDS = ("auto", "openvino", "onnxruntime", "torch")
_LOCK = threading.Lock()
# ONNX Runtime runs big batches in parts of at most this many images: per image, batch 32 took
# 1.5-1.7x as long as batch 1-4 for the shipped classifier on 2 cores (docs/inference-engine.md)
CHUNK = 4
BATCH_DIM = "batch"   # the dynamic batch axis of model.onnx (model.nets.onnx_export's dynamic_axes)


class EngineError(BundleError):
    """An engine that cannot run a bundle; the message says why and what to do."""


def engine_kind() -> str:
    kind = os.environ.get("DERMO_ENGINE", "auto").strip().lower() or "auto"
    if kind not in KINDS:
        raise EngineError(f"DERMO_ENGINE={kind!r}: choose one of {', '.join(KINDS)}.")
    return kind


def engine_threads() -> int:
    raw = os.environ.get("DERMO_ENGINE_THREADS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise EngineError(f"DERMO_ENGINE_THREADS={raw!r}: give a whole number of threads, 1 or more.")
        return int(raw)
    return max(1, min(4, torch.get_num_threads()))


def installed() -> list[str]:
    """The runtimes importable here (torch always is)."""
    out = []
    for kind, mod in (("openvino", "openvino"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(mod)
            out.append(kind)
        except ImportError:
            pass
    return out + ["torch"]


def check_onnx(bundle: Bundle) -> Path:
    """The bundle's model.onnx if it exists and was made from these weights; EngineError otherwise."""
    path = Path(bundle.path) / ONNX_FILE
    rebuild = f"Rebuild it with `python -m model.cli.onnx_export {bundle.path}`."
    if not path.is_file():
        raise EngineError(f"No {ONNX_FILE} in {bundle.path}. {rebuild}")
    recorded = _recorded_sha(path)
    if recorded is None:
        raise EngineError(f"{path} records no weights hash, so it cannot be tied to this bundle. {rebuild}")
    if recorded != weights_sha256(bundle.path):
        raise EngineError(f"{path} was exported from other weights (sha256 {recorded[:12]}..., the bundle's "
                          f"weights.safetensors is {weights_sha256(bundle.path)[:12]}...): stale or copied from "
                          f"another bundle, so it is not used. {rebuild}")
    return path


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def onnx_metadata(path: Path) -> dict[str, str]:
    """An ONNX file's metadata_props (ModelProto field 14), read from the protobuf wire format
    directly: no runtime needed, and nothing but length-prefixed fields is parsed."""
    buf = Path(path).read_bytes()
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if field == 14:
                entry, j, kv = buf[i:i + n], 0, {}
                while j < len(entry):
                    k, j = _varint(entry, j)
                    m, j = _varint(entry, j)
                    kv[k >> 3] = entry[j:j + m].decode("utf-8", "replace")
                    j += m
                out[kv.get(1, "")] = kv.get(2, "")
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if i != len(buf):
        raise ValueError("truncated file")
    return out


def _recorded_sha(path: Path) -> str | None:
    try:
        return onnx_metadata(path).get("weights_sha256")
    except (ValueError, IndexError, OSError) as e:
        raise EngineError(f"{path} is not a readable ONNX file ({str(e)[:120]}). "
                          f"Rebuild it with `python -m model.cli.onnx_export {path.parent}`.") from None


class Forward:
    """Runs a bundle's network forward; call with (x, output names) -> {name: numpy array}."""

    kind = "torch"

    def __init__(self, bundle: Bundle, threads: int, note: str = ""):
        self.bundle, self.threads, self.note = bundle, threads, note
        self.outputs = output_names(bundle)

    @property
    def label(self) -> str:
        """What runs it, for people: e.g. 'OpenVINO 2026.4.1 (CPU, 2 threads)'."""
        return f"torch {torch.__version__} ({self.device})"

    @property
    def device(self) -> str:
        return next(self.bundle.model.parameters()).device.type

    def __call__(self, x, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        from model.nets.onnx_export import export_wrapper

        names = list(outputs or self.outputs)
        model = self.bundle.model
        x = torch.as_tensor(x).to(next(model.parameters()).device)
        with torch.inference_mode():
            if self.bundle.task == "classify" and not any(n.startswith("stage") for n in names):
                final = model.forward_features(x)
                got = {"logits": model.forward_head(final), "features": model.forward_head(final, pre_logits=True)}
            else:
                res = export_wrapper(self.bundle)(x)
                got = dict(zip(self.outputs, [res] if isinstance(res, torch.Tensor) else res))
        return {n: got[n].float().cpu().numpy() for n in names}


class OrtForward(Forward):
    """ONNX Runtime on `threads` lanes: single-thread sessions, a batch split into at most
    `threads` parts run at once (the calling thread runs parts too). On the shipped networks this
    beats one session with `threads` intra-op threads: batch 1 5.3 vs 6.0 ms, batch 4 10.4 vs
    15.9 ms, batch 32 80 vs 127 ms on 2 cores (docs/inference-engine.md). On the CPU every part
    (1 to CHUNK images) runs in a session built for exactly that batch size, on first use: the
    static shapes make the same outputs 15-20% faster. On CUDA: one session, dynamic batch."""

    kind = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int, path: Path, cuda: bool = False):
        super().__init__(bundle, threads)
        import onnxruntime as ort

        self.path, self.cuda, self.version = path, cuda, ort.__version__
        self.lanes = 1 if cuda else threads
        self._pool = lanes_pool(self.lanes)
        self._sessions: dict[int | None, object] = {}
        self._building = threading.Lock()
        self.session = self._session(None if cuda else 1)   # built now: a file the runtime refuses fails here

    def _session(self, batch: int | None):
        """The session for inputs of exactly `batch` images (None: any number), built once."""
        got = self._sessions.get(batch)
        if got is not None:
            return got
        import onnxruntime as ort

        with self._building:
            if batch not in self._sessions:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads if self.cuda else 1
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave the CPU
                if batch is not None:
                    opts.add_free_dimension_override_by_name(BATCH_DIM, batch)
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.cuda else ["CPUExecutionProvider"]
                self._sessions[batch] = ort.InferenceSession(str(self.path), opts, providers=providers)
            return self._sessions[batch]

    @property
    def device(self) -> str:
        return "CUDA" if "CUDAExecutionProvider" in self.session.get_providers() else "CPU"

    @property
    def label(self) -> str:
        if self.lanes > 1:
            return f"ONNX Runtime {self.version} ({self.device}, {self.lanes} single-thread lanes)"
        return f"ONNX Runtime {self.version} ({self.device}, {self.threads} threads)"

    def _run(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        fixed = not self.cuda and len(x) <= CHUNK
        return self._session(len(x) if fixed else None).run(names, {"image": x})   # run() is thread-safe

    def __call__(self, x, outputs=None):
        names = list(outputs or self.outputs)
        x = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, np.float32)
        busy = self._pool is None or self._pool.idle() == 0     # no helper free: parts would all run here
        size = CHUNK if busy else min(CHUNK, -(-len(x) // self.lanes))
        if len(x) <= size:
            return dict(zip(names, self._run(names, x)))
        parts = run_parts(None if busy else self._pool, self.lanes, lambda p: self._run(names, p),
                          [x[i:i + size] for i in range(0, len(x), size)])
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


class OpenVinoForward(Forward):
    kind = "openvino"

    def __init__(self, bundle: Bundle, threads: int, path: Path):
        super().__init__(bundle, threads)
        import openvino as ov

        core = ov.Core()
        # f32 on purpose: on CPUs with bf16 support OpenVINO would otherwise compute in bf16
        self.compiled = core.compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        self.version = ov.get_version().split("-")[0]
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # one infer request per concurrent caller
        self._index = {n: i for i, o in enumerate(self.compiled.outputs) for n in o.get_names()}

    @property
    def device(self) -> str:
        return "CPU"

    @property
    def label(self) -> str:
        return f"OpenVINO {self.version} (CPU, {self.threads} threads)"

    def __call__(self, x, outputs=None):
        names = list(outputs or self.outputs)
        x = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, np.float32)
        try:
            req = self._requests.get_nowait()
        except queue.Empty:
            req = self.compiled.create_infer_request()
        try:
            req.infer({0: x})
            return {n: req.get_output_tensor(self._index[n]).data.copy() for n in names}
        finally:
            self._requests.put(req)


def build_engine(bundle: Bundle, kind: str | None = None, threads: int | None = None) -> Forward:
    """A new Forward for the bundle (uncached; `engine_for` is the shared one)."""
    kind = kind or engine_kind()
    threads = threads or engine_threads()
    device = next(bundle.model.parameters()).device.type
    if kind == "torch":
        return Forward(bundle, threads)
    candidates = [k for k in AUTO_ORDER if k in installed()] if kind == "auto" else [kind]
    if device == "cuda":  # on a GPU only ONNX Runtime's CUDA provider competes with torch
        candidates = [k for k in candidates if k == "onnxruntime"]
    if kind != "auto" and kind not in installed():
        raise EngineError(f"DERMO_ENGINE={kind} but {kind} is not installed: pip install -r requirements.txt, "
                          "or use DERMO_ENGINE=auto.")
    try:
        path = check_onnx(bundle)
    except EngineError as e:
        if kind != "auto":
            raise
        if candidates:
            warnings.warn(str(e), stacklevel=2)
        return Forward(bundle, threads, note=str(e))
    reasons = []
    for k in candidates:
        try:
            if k == "onnxruntime":
                import onnxruntime as ort

                if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise EngineError("this ONNX Runtime has no CUDA provider")
                return OrtForward(bundle, threads, path, cuda=device == "cuda")
            return OpenVinoForward(bundle, threads, path)
        except Exception as e:  # noqa: BLE001 - runtimes raise their own error types
            if kind != "auto":
                raise EngineError(f"{k} cannot run {path}: {str(e)[:200]}") from None
            reasons.append(f"{k}: {str(e)[:120]}")
    return Forward(bundle, threads, note="; ".join(reasons) or "no ONNX runtime installed")


def engine_for(bundle: Bundle, kind: str | None = None) -> Forward:
    """The engine for this bundle object, built on first use and then shared by every thread (it
    lives on the bundle, so it goes with it). `kind` overrides DERMO_ENGINE."""
    key = (kind or engine_kind(), engine_threads())
    with _LOCK:
        cache = bundle.__dict__.setdefault("_engines", {})
        if key not in cache:
            cache[key] = build_engine(bundle, *key)
        return cache[key]
