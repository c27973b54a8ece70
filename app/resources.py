"""The app's only cached resources: the shared Analyzer and per-image results.

- `get_analyzer()`: one Analyzer per server process (st.cache_resource), shared by every
  session; it picks the GPU when there is one. Without a bundle it shows how to get one and
  stops the page (no traceback).
- `analyse()`: results cached (st.cache_data) by the sha256 of the image bytes plus the options
  that change the network's output, so display settings (opacity, mask toggle, enlarged map)
  never run the network again.
Torch is imported only when a model is loaded, never by the pages themselves.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import streamlit as st

from app.meta import MetaError, read_meta, read_split_ids
from app.threads import sleep_while_waiting

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO_ROOT / "assets" / "models"
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
TRAIN_HINT = (
    "python train.py classify --data DIR --out assets/models/classifier --arch ARCH --epochs N\n"
    "python train.py segment  --data DIR --out assets/models/segmenter --epochs N   # optional: outlines")


@dataclass
class LoadedModel:
    analyzer: Any          # model.inference.pipeline.Analyzer (typed loosely to keep torch out of imports)
    load_seconds: float
    device: str
    device_name: str = ""  # e.g. "NVIDIA T4 (CUDA 12.8)" or "CPU (...), 2 cores": what the sidebar shows


def models_dir() -> Path:
    """The models folder: $DERMO_MODELS_DIR or <repo>/assets/models (holds classifier/, segmenter/)."""
    return Path(os.environ.get("DERMO_MODELS_DIR") or DEFAULT_MODELS_DIR).expanduser()


def model_key(models: Path | None = None) -> str:
    """Identifies the bundles on disk (folder + meta.json mtimes): a retrained model gets a new key."""
    models = models or models_dir()
    stamps = []
    for part in ("classifier", "segmenter"):
        p = models / part / "meta.json"
        stamps.append(f"{p.stat().st_mtime_ns}" if p.is_file() else "-")
    return f"{models.resolve()}|{'|'.join(stamps)}"


def has_classifier(models: Path | None = None) -> bool:
    return ((models or models_dir()) / "classifier" / "meta.json").is_file()


_READY: dict[tuple[str, str], LoadedModel] = {}   # what _load has finished, for pages that must not wait


@st.cache_resource(max_entries=2, show_spinner="Loading the model (once per server)…")
def _load(models: str, key: str) -> LoadedModel:
    sleep_while_waiting()  # before torch's first import: see app/threads.py
    from model.inference.pipeline import Analyzer  # torch is imported here, once per process
    from model.nets.machine import hardware_summary

    start = time.perf_counter()
    analyzer = Analyzer.from_dir(models)  # the GPU when CUDA is available, else the CPU
    loaded = LoadedModel(analyzer, time.perf_counter() - start, str(analyzer.device),
                         hardware_summary(analyzer.device))
    _READY[(models, key)] = loaded
    return loaded


def _load_quietly(models: str, key: str) -> None:
    try:
        loaded = _load(models, key)
    except Exception:  # noqa: BLE001 - the page that needs the model loads it again and says what failed
        logging.getLogger(__name__).exception("loading the model in the background failed")
        return
    try:
        warm_paths(loaded)
    except Exception:  # noqa: BLE001 - only a head start: the first upload pays these costs instead
        logging.getLogger(__name__).exception("warming the analysis paths failed")


def warm_paths(loaded: LoadedModel) -> None:
    """Pay the one-time costs of a process's first analysis and first chart here, in the background,
    not in the first clinician's upload: plotly builds its template's validators (about 0.2 s), the
    networks' first passes set themselves up (docs/page-latency.md)."""
    import plotly.graph_objects as go

    go.Figure(go.Bar(x=[0.5], y=["a"], orientation="h")).update_layout(template="plotly_white").to_json()
    example = next(iter(sorted(EXAMPLES_DIR.glob("*.jpg"))), None)
    if example is not None:
        loaded.analyzer.analyze(example.read_bytes(), cam_methods=("gradcam",),
                                feature_layer=loaded.analyzer.layers[-1])


def warm_up() -> None:
    """Start loading the model in the background, so a page can draw its inputs first (issue 26.14:
    the first page of a fresh server waited for torch and the bundles). Shows how to get a model and
    stops the page when there is none."""
    models = models_dir()
    if not has_classifier(models):
        show_no_model(models)
        st.stop()
    job = (str(models), model_key(models))
    with _WARMING_LOCK:
        if job in _READY or job in _WARMING:
            return
        _WARMING.add(job)
    threading.Thread(target=_load_quietly, args=job, name="model-warm-up", daemon=True).start()


_WARMING: set[tuple[str, str]] = set()
_WARMING_LOCK = threading.Lock()


def device_label() -> str | None:
    """Where the models run ("GPU: NVIDIA T4 (CUDA 12.8)" / "CPU: ..."), or None while no model is
    loaded yet (the sidebar never waits for it)."""
    models = models_dir()
    loaded = _READY.get((str(models), model_key(models))) if has_classifier(models) else None
    if loaded is None:
        return None
    return ("GPU: " if loaded.device.startswith("cuda") else "") + (loaded.device_name or loaded.device)


def show_no_model(models: Path) -> None:
    st.error(f"No trained model found in `{models}/classifier`.")
    st.markdown("Train one from a HAM10000-style folder (see the README), for example:")
    st.code(TRAIN_HINT, language="bash")
    st.markdown("or copy an existing bundle folder (`meta.json` + `weights.safetensors`) there, or set "
                "the environment variable `DERMO_MODELS_DIR` to a folder holding `classifier/` "
                "(and optionally `segmenter/`).")


def get_loaded() -> LoadedModel:
    """The shared model, or an explanation and st.stop() when there is none or it is broken."""
    models = models_dir()
    if not has_classifier(models):
        show_no_model(models)
        st.stop()
    from model.nets.bundle import BundleError

    try:
        return _load(str(models), model_key(models))
    except BundleError as e:
        st.error(f"The model bundle in `{models}` cannot be used: {e}")
        st.stop()


def get_analyzer():
    return get_loaded().analyzer


def cam_method_labels() -> dict[str, str]:
    """CAM method id -> display name."""
    from model.labels import CAM_METHOD_NAMES

    return dict(CAM_METHOD_NAMES)


def thresholds() -> dict[str, float]:
    """The pipeline's own limits, so the pages never retype them: 'min_lesion_pct' (mask share under
    which no lesion counts as found). The heat warning's limits are per CAM method and measured:
    `Analyzer.heat_limits`."""
    from model.inference.gate import MIN_LESION_PCT

    return {"min_lesion_pct": float(MIN_LESION_PCT)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@st.cache_data(max_entries=8, ttl=2 * 3600, show_spinner="Analysing…")  # ~10-25 MB each: 8 keep the server
# under 1.2 GB through the hostile replay (docs/hostile-input.md); a miss costs one analysis (~50-100 ms)
def _analyse(digest: str, models: str, key: str, cam_class: str | None, cam_layer: str | None,
             cam_methods: tuple[str, ...], tta: bool, feature_layer: str | None, segment: bool,
             _data: bytes):
    return _load(models, key).analyzer.analyze(
        _data, cam_class=cam_class, cam_layer=cam_layer, cam_methods=cam_methods, tta=tta,
        feature_layer=feature_layer, segment=segment)


def analyse(data: bytes, *, cam_class: str | None = None, cam_layer: str | None = None,
            cam_methods: Sequence[str] = ("gradcam",), tta: bool = False,
            feature_layer: str | None = None, segment: bool = True):
    """Analysis of image bytes, cached by content + options. Raises model.data.preprocess.ImageError."""
    get_loaded()  # shows the no-model message and stops if needed
    models = models_dir()
    return _analyse(sha256(data), str(models), model_key(models), cam_class, cam_layer,
                    tuple(cam_methods), bool(tta), feature_layer, bool(segment), data)


@st.cache_data(max_entries=64, ttl=2 * 3600, show_spinner=False)  # ~0.3 MB each at the working size
def _what_if(digest: str, models: str, key: str, name: str, cam_class: str | None, cam_layer: str | None,
             cam_method: str, _data: bytes):
    base = analyse(_data)
    return _load(models, key).analyzer.what_if(base.image, name, base.lesion_mask, cam_class=cam_class,
                                                cam_layer=cam_layer, cam_method=cam_method)


def what_if(data: bytes, name: str, *, cam_class: str | None = None, cam_layer: str | None = None,
            cam_method: str = "gradcam"):
    """The image with what-if `name` drawn on it (model.explain.confounders), classified and explained
    (model.inference.results.WhatIf), cached by content + options. Raises model.explain.confounders.WhatIfError
    when it cannot be drawn (lesion-only / surroundings-only without a lesion)."""
    get_loaded()
    models = models_dir()
    return _what_if(sha256(data), str(models), model_key(models), name, cam_class, cam_layer, cam_method, data)


# ----------------------------------------------------------------------------- bundle facts
@st.cache_data(max_entries=4, show_spinner=False)
def _metas(key: str, models: str) -> tuple[dict | None, dict | None, str | None]:
    errors = []
    out = []
    for part in ("classifier", "segmenter"):
        try:
            out.append(read_meta(Path(models) / part))
        except MetaError as e:
            out.append(None)
            errors.append(str(e))
    return out[0], out[1], " ".join(errors) or None


def bundle_metas() -> tuple[dict | None, dict | None, str | None]:
    """(classifier meta, segmenter meta, error text); None where a bundle is missing."""
    models = models_dir()
    return _metas(model_key(models), str(models))


@st.cache_data(max_entries=4, show_spinner=False)
def _split_ids(key: str, models: str) -> dict[str, set[str]] | None:
    return read_split_ids(Path(models) / "classifier")


def training_split_of(image_id: str) -> str | None:
    """'train' / 'val' / 'test' for an image in the classifier's recorded split; None if absent.
    Raises LookupError when the bundle has no split.json."""
    models = models_dir()
    splits = _split_ids(model_key(models), str(models))
    if splits is None:
        raise LookupError("no split.json")
    return next((name for name, ids in splits.items() if image_id in ids), None)


# ----------------------------------------------------------------------------- examples
@st.cache_data(show_spinner=False)
def load_examples(folder: str = str(EXAMPLES_DIR)) -> list[dict]:
    """The bundled example images' records (examples.json) whose files exist."""
    path = Path(folder) / "examples.json"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    root = Path(folder).resolve()
    ok = []
    for r in records if isinstance(records, list) else []:
        if isinstance(r, dict) and isinstance(r.get("file"), str):
            f = (root / r["file"]).resolve()
            if f.parent == root and f.is_file():
                ok.append(r)
    return ok


@st.cache_data(max_entries=4, show_spinner=False)
def _weights_digest(key: str, models: str) -> str | None:
    from model.nets.weights_hash import weights_sha256

    try:
        return weights_sha256(Path(models) / "classifier")[:16]
    except OSError:
        return None


def classifier_digest() -> str | None:
    """First 16 hex digits of the loaded classifier's weights sha256 (what derived files record)."""
    models = models_dir()
    return _weights_digest(model_key(models), str(models))


def example_bytes(record: dict, folder: str = str(EXAMPLES_DIR)) -> bytes:
    return (Path(folder) / record["file"]).read_bytes()
