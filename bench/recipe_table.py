"""The README's recipe table, read from the bundles' meta.json (nothing typed in by hand).

    python -m bench.recipe_table runs/cls-mnv4s-112 runs/compare/*/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEADER = ("| run | arch | input | start | fine-tuning | imbalance | augmentation | regularisation | epochs | train min | "
          "val bal. acc. (kept epoch) | test bal. acc. | test macro AUC | test mel. sens. | test ECE (after T) | "
          "test mel. flag sens. / spec. |")
ALIGN = "|---|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def regularisation(cfg: dict) -> str:
    """Label smoothing, mixup/CutMix and EMA of a run, in a few words ("–" for none)."""
    parts = [f"{name} {cfg[key]:g}" for key, name in (("label_smoothing", "smoothing"), ("mixup", "mixup"),
                                                       ("cutmix", "CutMix"), ("ema", "EMA")) if cfg.get(key)]
    return ", ".join(parts) or "–"


def start(meta: dict) -> str:
    """Where the weights started: 'ImageNet (package)', 'ImageNet (hub)' or 'scratch'."""
    pre = meta.get("pretrained")
    if isinstance(pre, dict):
        return f"ImageNet ({pre.get('source', '?')})"
    return "ImageNet" if meta.get("train_config", {}).get("pretrained") else "scratch"


def fine_tuning(cfg: dict) -> str:
    """Learning rate, body learning-rate multiplier, head-only epochs and frozen BatchNorm."""
    parts = [f"lr {cfg['lr']:g}"] if isinstance(cfg.get("lr"), (int, float)) else []
    if cfg.get("body_lr_mult", 1.0) != 1.0:
        parts.append(f"body x{cfg['body_lr_mult']:g}")
    if cfg.get("freeze_epochs"):
        parts.append(f"head only {cfg['freeze_epochs']} ep.")
    if cfg.get("freeze_bn"):
        parts.append("BN frozen")
    return ", ".join(parts) or "–"


def recipe_row(bundle: Path) -> str:
    """One markdown row for a classifier bundle folder."""
    meta = json.loads((bundle / "meta.json").read_text())
    cfg, test = meta.get("train_config", {}), meta.get("metrics", {}).get("test", {})
    aug = cfg.get("augment", "?") + (f" + {cfg['class_augment']}" if cfg.get("class_augment") else "")
    h, w = meta["input_size"]
    history = meta.get("history", [])
    epochs = len(history)
    kept = meta.get("kept_epoch", meta.get("best_epoch"))
    kept_row = history[kept - 1] if isinstance(kept, int) and 1 <= kept <= epochs else {}
    val = kept_row.get("val_balanced_accuracy", kept_row.get("score"))
    flag = (f"{_f(test.get('melanoma_flag_sensitivity'), 2)} / {_f(test.get('melanoma_flag_specificity'), 2)}"
            if "melanoma_flag_sensitivity" in test else "–")
    return (f"| {bundle.name} | {meta['arch']} | {h}x{w} | {start(meta)} | {fine_tuning(cfg)} | "
            f"{cfg.get('imbalance', '?')} | {aug} | {regularisation(cfg)} | {epochs} | "
            f"{meta.get('train_time_s', 0) / 60:.0f} | {_f(val)} ({kept}) | "
            f"{_f(test.get('balanced_accuracy'))} | {_f(test.get('macro_auc'))} | "
            f"{_f(test.get('melanoma_sensitivity'))} | {_f(test.get('ece_after_temperature'))} | {flag} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.recipe_table", description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="classifier bundle folders (with meta.json)")
    args = ap.parse_args(argv)
    rows = []
    for b in args.bundles:
        if not (b / "meta.json").is_file():
            print(f"skipped {b}: no meta.json (unfinished run?)", file=sys.stderr)
            continue
        rows.append(recipe_row(b))
    print("\n".join([HEADER, ALIGN, *rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
