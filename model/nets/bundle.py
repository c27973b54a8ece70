"""Self-describing model bundles: a folder with `weights.safetensors` and `meta.json`.

meta.json carries everything needed to rebuild and use the model: task, architecture and its
arguments, class names in order, input size, mean/std, temperature, training config and command,
split hash, per-epoch log, measured metrics. Loading validates it against the weights; nothing
is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.data.domain import domain_of
from model.files import atomic_write
from model.nets.weights_hash import WEIGHTS_FILE as WEIGHTS

SCHEMA_VERSION = 1
EXTRAS = "extras.safetensors"
META = "meta.json"
TASKS = ("classify", "segment")
REQUIRED = {
    "classify": ("task", "arch", "classes", "input_size", "mean", "std"),
    "segment": ("task", "arch", "input_size", "mean", "std"),
}


class BundleError(ValueError):
    """A bundle that cannot be used; the message says what is wrong and what to do."""


@dataclass
class Bundle:
    model: torch.nn.Module
    meta: dict[str, Any]
    path: Path
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.meta["input_size"]
        return int(h), int(w)

    @property
    def mean(self) -> list[float]:
        return list(self.meta["mean"])

    @property
    def std(self) -> list[float]:
        return list(self.meta["std"])

    @property
    def domain(self) -> dict[str, Any]:
        """The one input path's settings (meta.json `preprocessing`, defaults filled in)."""
        return domain_of(self.meta)

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @property
    def version(self) -> str:
        return f"{self.meta['arch']} · {self.meta.get('created', '?')[:10]} · split {self.meta.get('split', {}).get('hash', '?')}"


def build_from_meta(meta: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the (untrained) network a meta.json describes."""
    if meta["task"] == "classify":
        from model.nets.classifier import build_classifier

        return build_classifier(meta["arch"], len(meta["classes"]), **meta.get("arch_kwargs", {}))
    from model.nets.segmenter import build_segmenter

    return build_segmenter(meta["arch"], **meta.get("arch_kwargs", {}))


def save_bundle(out_dir: str | Path, model: torch.nn.Module, meta: dict[str, Any],
                half: bool = False, extras: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (float16 if `half`) and meta.json atomically; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    validate_meta(meta)
    state = {k: (v.detach().to("cpu").contiguous().half() if half and v.is_floating_point()
                 else v.detach().to("cpu").contiguous())
             for k, v in model.state_dict().items()}
    meta = {**meta, "schema": SCHEMA_VERSION, "weights_dtype": "float16" if half else "float32"}
    atomic_write(out / WEIGHTS, lambda p: save_file(state, p))
    if extras:
        atomic_write(out / EXTRAS, lambda p: save_file({k: v.contiguous().cpu() for k, v in extras.items()}, p))
    atomic_write(out / META, lambda p: Path(p).write_text(json.dumps(meta, indent=1, default=str)))
    return out


def update_meta(bundle_dir: str | Path, **fields) -> dict[str, Any]:
    """Add or replace top-level meta.json fields (e.g. measured metrics) atomically."""
    path = Path(bundle_dir) / META
    meta = json.loads(path.read_text())
    meta.update(fields)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(meta, indent=1, default=str)))
    return meta


def validate_meta(meta: Any) -> None:
    if not isinstance(meta, dict):
        raise BundleError("meta.json must hold a JSON object.")
    task = meta.get("task")
    if task not in TASKS:
        raise BundleError(f"meta.json 'task' must be one of {TASKS}, not {task!r}.")
    missing = [k for k in REQUIRED[task] if k not in meta]
    if missing:
        raise BundleError(f"meta.json lacks {', '.join(missing)}.")
    if meta.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise BundleError(f"Bundle schema {meta['schema']} is newer than this code ({SCHEMA_VERSION}); update the app.")
    size = meta["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise BundleError(f"meta.json input_size must be [height, width], not {size!r}.")
    for key in ("mean", "std"):
        if not (isinstance(meta[key], list) and len(meta[key]) == 3):
            raise BundleError(f"meta.json {key} must list 3 numbers.")
    if task == "classify":
        classes = meta["classes"]
        if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
                and len(set(classes)) == len(classes)):
            raise BundleError("meta.json classes must be a list of distinct class names.")


def read_meta(bundle_dir: str | Path) -> dict[str, Any]:
    """Read and validate meta.json without touching the weights (cheap; used by the model card)."""
    path = Path(bundle_dir) / META
    if not path.is_file():
        raise BundleError(f"No {META} in {bundle_dir}. Train a model with `python train.py` "
                          "or point to a bundle folder.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}).") from None
    validate_meta(meta)
    return meta


def load_bundle(bundle_dir: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild a model from its bundle, in eval mode on `device`; BundleError if anything disagrees."""
    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    weights = bundle_dir / WEIGHTS
    if not weights.is_file():
        raise BundleError(f"No {WEIGHTS} in {bundle_dir}.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BundleError(f"{weights} is not a valid safetensors file ({str(e)[:120]}). "
                          "Weights are only read as safetensors, never unpickled.") from None
    try:
        model = build_from_meta(meta)
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"meta.json describes a model that cannot be built: {e}") from None
    expected = model.state_dict()
    problems = [k for k in expected if k not in state][:3] + [k for k in state if k not in expected][:3]
    problems += [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)][:3]
    if problems:
        raise BundleError(f"The weights do not match the architecture in meta.json ({meta['arch']}, "
                          f"{len(meta.get('classes', [])) or 1} outputs): {'; '.join(problems)}.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.eval().to(device)
    extras = {}
    if (bundle_dir / EXTRAS).is_file():
        try:
            extras = load_file(str(bundle_dir / EXTRAS))
        except (SafetensorError, OSError) as e:
            raise BundleError(f"{bundle_dir / EXTRAS} is not valid safetensors ({e}).") from None
    return Bundle(model, meta, bundle_dir, extras)
