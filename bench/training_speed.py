"""Training throughput: the steps of model.training.loop.fit timed for a few batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import Clock, log, summarize


def _training_data(meta: dict, n: int, data_dir: Path | None, with_masks: bool):
    import torch
    from model.data.dataset import decode_records, load_dataset

    h, w = meta["input_size"]
    if data_dir is not None and data_dir.is_dir():
        ds = load_dataset(data_dir)
        records = [r for r in ds.records if r.mask_path is not None] if with_masks else ds.records
        classes = list(meta.get("classes") or sorted({r.label for r in records}))
        records = [r for r in records if r.label in classes]
        dec = decode_records(records, (h, w), classes, with_masks, workers=2)
        if len(dec.records):
            idx = np.resize(np.arange(len(dec.records)), n)  # repeat to fill a batch
            masks = dec.masks[idx] if with_masks else None
            return dec.images[idx], dec.labels[idx], masks, f"{data_dir.name} ({len(dec.records)} images, repeated)"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    labels = np.arange(n) % max(2, len(meta.get("classes", [])) or 2)
    masks = (torch.rand(n, 1, h, w, generator=g) > 0.5).to(torch.uint8) if with_masks else None
    return images, labels, masks, "synthetic uint8"


def bench_training(bundle_dir: Path, device: str, steps: int, batch_size: int | None, data_dir: Path | None) -> dict:
    """The steps of model.training.loop.fit for a few batches: augment, normalise, forward, loss,
    backward, gradient clipping, optimiser and schedule step (and EMA when the bundle used it)."""
    import torch
    import torch.nn.functional as F
    from model.nets.bundle import build_from_meta, read_meta
    from model.training.augment import AUGMENT_STRENGTHS
    from model.training.shift import parse_shift
    from model.training.loop import (CHANNELS_LAST, EMA, LoopConfig, batch_inputs, class_weights, dice_bce_loss,
                                     make_optimizer, make_scheduler, train_step)

    meta = read_meta(bundle_dir)
    cfg = meta.get("train_config", {})
    segment = meta["task"] == "segment"
    dev = torch.device(device)
    bs = int(batch_size or cfg.get("batch_size") or 64)
    images, labels, masks, source = _training_data(meta, bs * 2, data_dir, segment)
    torch.manual_seed(0)
    model = build_from_meta(meta)
    model = model.to(dev, memory_format=torch.channels_last if CHANNELS_LAST else torch.contiguous_format).train()
    opt = make_optimizer(model, cfg.get("opt", "adamw"), float(cfg.get("lr", 2e-3)), float(cfg.get("weight_decay", 0.05)))
    sched = make_scheduler(opt, "cosine", 1, steps + 1, 0.0)
    ema = EMA(model, float(cfg["ema"])) if float(cfg.get("ema") or 0) > 0 else None
    n_classes = len(meta.get("classes", [])) or 2
    loop = LoopConfig(epochs=1, batch_size=bs, augment=AUGMENT_STRENGTHS.get(cfg.get("augment", "medium"), 1.0),
                      balanced=0.0, mean=meta["mean"], std=meta["std"], device=dev, channels_last=CHANNELS_LAST,
                      amp=dev.type == "cuda", patience=0, seed=0, checkpoint_dir=Path("."),
                      mixup=0.0 if segment else float(cfg.get("mixup") or 0),
                      cutmix=0.0 if segment else float(cfg.get("cutmix") or 0),
                      shift=parse_shift(cfg.get("shift") or ""), num_classes=n_classes)
    images, labels_t = images.to(dev), torch.as_tensor(labels, device=dev)
    masks = masks.to(dev) if masks is not None else None
    weights = None if segment else class_weights(labels, len(meta["classes"])).to(dev)

    def loss_fn(m, x, target):  # what train.py trains with
        out = m(x).float()
        return dice_bce_loss(out, target) if segment else F.cross_entropy(out, target, weight=weights)

    strength = torch.as_tensor(loop.augment, dtype=torch.float32, device=dev)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps + 1):  # step 0 is the warm-up
        clk = Clock(dev)
        idx = torch.as_tensor(rng.choice(len(images), bs, replace=False), device=dev)
        x, target = batch_inputs(images, labels_t, masks, idx, strength, loop, gen, n_classes)
        train_step(model, model, x, target, loss_fn, opt, sched, ema, loop.amp)
        ms = clk.lap()
        if step > 0:
            times.append(ms)
        log(f"  [{device}] training {meta['task']} step {step}/{steps}{' (warm-up)' if step == 0 else ''}: "
            f"{ms:.0f} ms for {bs} images")
    ips = [bs / (t / 1000) for t in times]
    return {"arch": meta["arch"], "input_size": meta["input_size"], "batch_size": bs, "steps_timed": len(times),
            "data": source, "ema": ema is not None, "mixing": bool(loop.mixup or loop.cutmix),
            "images_per_s": summarize(ips), "ms_per_step": summarize(times),
            "torch_threads": torch.get_num_threads()}
