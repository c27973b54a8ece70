"""The pieces train.py composes: device, sampling, losses, optimiser/schedule, EMA, the epoch
loop with progress and throughput, checkpoints (atomic, resumable) and temperature scaling."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.training.distributed import Dist, rank_batches, from_main, sum_across, wrap
from model.data.preprocess import normalize
from model.files import atomic_write
from model.training.augment import augment_batch, mix_batch
from model.training.shift import shift_batch


# Training keeps images and weights channels-last on every device: faster on CUDA, and on CPUs too
# (oneDNN): mobilenetv4_conv_small at 112x144 trains at 188 instead of 124 images/s on 2 Zen 4 cores
# (python -m bench.train_formats).
CHANNELS_LAST = True


# ----------------------------------------------------------------------------- imbalance
def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency loss weights, scaled so the average sample weight is 1."""
    counts = np.maximum(class_counts(labels, n_classes), 1).astype(float)
    w = counts.sum() / (n_classes * counts)
    return torch.tensor(w / (w[labels].mean()), dtype=torch.float32)


def log_prior(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """log of the training class frequencies, for the logit-adjusted loss (Menon et al., ICLR 2021):
    training on softmax(logits + log prior) with natural sampling leaves the raw logits estimating
    p(x | class), i.e. the posterior under equally common classes, without repeating rare images."""
    counts = np.maximum(class_counts(labels, n_classes), 1).astype(np.float64)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def epoch_order(labels: np.ndarray, balanced: float, rng: np.random.Generator) -> np.ndarray:
    """Sample order for one epoch. `balanced` 0 (or False): a permutation; otherwise draws with
    replacement in which a class of n images is drawn in proportion to n ** (1 - balanced):
    1 (or True) = every class equally often, 0.5 = square-root sampling."""
    n = len(labels)
    if not balanced:
        return rng.permutation(n)
    counts = np.bincount(labels)
    p = counts[labels].astype(np.float64) ** -float(balanced)
    return rng.choice(n, size=n, replace=True, p=p / p.sum())


# ----------------------------------------------------------------------------- losses
def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice for one-channel lesion logits (Nx1xHxW) against {0,1} targets."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + (1 - dice).mean()


# ----------------------------------------------------------------------------- optimisation
def body_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The pretrained body's parameters: a U-Net's encoder, or a classifier minus its head."""
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        return list(model.encoder.parameters())
    head = {id(p) for p in model.get_classifier().parameters()}
    return [p for p in model.parameters() if id(p) not in head]


def body_batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    root = model.encoder if hasattr(model, "encoder") and hasattr(model, "decoder") else model
    return [m for m in root.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float, body_lr_mult: float = 1.0):
    """AdamW/SGD without weight decay on biases and norms; the body (see body_parameters) at
    lr * body_lr_mult when that is not 1 (a pretrained body learns slower than a new head)."""
    params = [p for p in model.parameters() if p.requires_grad]
    body = {id(p) for p in body_parameters(model)} if body_lr_mult != 1.0 else set()
    groups = []
    for part, mult in (("head", 1.0), ("body", body_lr_mult)):
        chosen = [p for p in params if (id(p) in body) == (part == "body")]
        for wd, keep in ((weight_decay, lambda p: p.ndim > 1), (0.0, lambda p: p.ndim <= 1)):
            group = [p for p in chosen if keep(p)]
            if group:
                groups.append({"params": group, "weight_decay": wd, "lr": lr * mult})
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimiser {name!r}")


def make_scheduler(opt, name: str, epochs: int, steps_per_epoch: int, warmup_epochs: float):
    """'cosine' (with linear warm-up) and 'step' are stepped per batch; 'plateau' per epoch."""
    total = max(1, epochs * steps_per_epoch)
    warm = int(warmup_epochs * steps_per_epoch)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        if name == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if name == "step":
            return 0.1 ** int(progress * 3)
        raise ValueError(f"unknown schedule {name!r}")

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class EMA:
    """Exponential moving average of a model's weights (evaluated instead of the raw weights).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so the average follows
    the model closely at first instead of holding on to the random initialisation for thousands
    of steps (with ~90 steps an epoch, a fixed 0.998 still weighed the init after 5 epochs).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.lerp_(m.detach(), 1 - d)
            else:
                e.copy_(m)
        self.updates += 1


class BodyControl:
    """Called at each epoch's start: freezes the pretrained body for its first `freeze_epochs`
    (the new head learns first), and keeps the body's BatchNorm statistics fixed while frozen
    or throughout with `freeze_bn` (small batches give noisy statistics)."""

    def __init__(self, freeze_epochs: int = 0, freeze_bn: bool = False):
        self.freeze_epochs, self.freeze_bn = int(freeze_epochs), bool(freeze_bn)
        self._trainable: dict[int, bool] | None = None

    def __call__(self, model: torch.nn.Module, epoch: int) -> None:
        body = body_parameters(model)
        if self._trainable is None:
            self._trainable = {id(p): p.requires_grad for p in body}
        frozen = epoch < self.freeze_epochs
        for p in body:
            p.requires_grad_(self._trainable.get(id(p), True) and not frozen)
        if frozen or self.freeze_bn:
            for m in body_batchnorms(model):
                m.eval()


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write never replaces a good checkpoint with a partial one."""
    atomic_write(path, lambda tmp: torch.save(state, tmp), mode=0o600)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler: tensors only


# ----------------------------------------------------------------------------- the loop
@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    augment: float | np.ndarray  # strength, or one strength per class
    balanced: float  # 0 = natural frequencies, 1 = balanced classes, 0.5 = square-root sampling
    mean: list[float]
    std: list[float]
    device: torch.device
    channels_last: bool
    amp: bool
    patience: int
    seed: int
    checkpoint_dir: Path
    ema_decay: float = 0.0
    monitor: str = "score"
    keep: str = "best"  # weights the run ends with: "best" validation score, or "last" epoch
    mixup: float = 0.0  # Beta alpha for mixup (0 = off); classification only
    cutmix: float = 0.0  # Beta alpha for CutMix (0 = off); with both set, each batch uses one of them
    shift: tuple[str, ...] = ()  # dermatoscope-shift families (model.training.shift); classification only
    num_classes: int = 0  # for the soft targets of mixed batches (0 = from the labels)
    before_epoch: Callable[[torch.nn.Module, int], None] | None = None  # e.g. BodyControl, after model.train()
    dist: Dist = field(default_factory=Dist)  # rank and world size under torchrun (batch_size stays global)


@dataclass
class LoopState:
    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    kept_epoch: int = -1  # the epoch whose weights the model holds when fit returns


UNSTABLE_LOSS_RATIO = 3.0


def _unstable(metrics: dict, earlier: list[dict]) -> bool:
    """An epoch whose validation loss is not finite, or over UNSTABLE_LOSS_RATIO x the lowest of the
    earlier epochs: its score may be high, but a few images get exploding outputs (seen here once:
    balanced accuracy at its peak while the loss jumped from 0.9 to 22)."""
    loss = metrics.get("val_loss")
    if loss is None:
        return False
    if not math.isfinite(loss):
        return True
    before = [h["val_loss"] for h in earlier if isinstance(h.get("val_loss"), (int, float)) and math.isfinite(h["val_loss"])]
    return bool(before) and loss > UNSTABLE_LOSS_RATIO * min(before)


RANK_SEED_STRIDE = 1_000_003


def _quiet(_msg: str) -> None:
    pass


def batch_inputs(images, labels_t, masks, idx_t, strength, cfg: LoopConfig, gen, n_classes: int):
    """One training batch as the network sees it: (normalised x, target). uint8 -> [0, 1], the
    geometric and colour augmentation (per-class strength), the dermatoscope-shift families, mixup
    or CutMix (soft targets), then the model's normalisation. Masks get the same geometry."""
    x = images[idx_t].float().div_(255)
    target = masks[idx_t].float() if masks is not None else labels_t[idx_t]
    s = strength[labels_t[idx_t]] if strength.ndim == 1 else strength
    x, target_aug = augment_batch(x, s, gen, target if masks is not None else None)
    if masks is not None:
        target = (target_aug > 0.5).float()
    elif cfg.shift:
        x = shift_batch(x, cfg.shift, gen)
    if masks is None and (cfg.mixup > 0 or cfg.cutmix > 0):  # cross-entropy takes class probabilities too
        x, target, _ = mix_batch(x, F.one_hot(target, n_classes).float(), cfg.mixup, cfg.cutmix, gen)
    return normalize(x * 255, cfg.mean, cfg.std, cfg.channels_last), target


def train_step(net, model, x, target, loss_fn: Callable, opt, sched=None, ema: "EMA | None" = None,
               amp: bool = False) -> float:
    """One optimiser step: forward (bfloat16 autocast when `amp`), loss, backward, gradient clipping
    at norm 5, optimiser and schedule step, EMA update. Returns the loss. `net` is what forwards
    (the DDP wrapper under torchrun), `model` the module whose parameters are clipped and averaged."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(net, x, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    if sched is not None:
        sched.step()
    if ema is not None:
        ema.update(model)
    return float(loss.detach())


@dataclass
class _Run:
    """What fit carries from epoch to epoch."""
    net: torch.nn.Module
    ema: "EMA | None"
    state: LoopState
    rng: np.random.Generator
    gen: torch.Generator
    best_weights: dict | None = None


def fit(model, images, labels, masks, loss_fn: Callable, validate: Callable[[torch.nn.Module], dict],
        opt, sched, cfg: LoopConfig, resume: bool = False, log: Callable[[str], None] = print) -> LoopState:
    """Train with early stopping on `validate(model)['score']`; keeps the best weights on disk.

    images: uint8 Nx3xHxW (already on cfg.device); labels: int64 numpy; masks: uint8 Nx1xHxW or None.
    `loss_fn(model, x, y_or_mask)` returns a scalar loss. Resumes from last.pt when `resume`.
    """
    if not cfg.dist.main:
        log = _quiet
    run = _start(model, opt, sched, cfg, resume, log)
    while run.state.epoch < cfg.epochs:
        if run.state.best_epoch >= 0 and run.state.epoch - run.state.best_epoch > cfg.patience:
            log(f"early stop: no improvement for {cfg.patience} epochs")
            break
        seen, loss_sum, t0 = _train_epoch(run, model, images, labels, masks, loss_fn, opt, sched, cfg)
        _end_epoch(run, model, validate, opt, sched, cfg, seen, loss_sum, t0, log)
    _keep_weights(run, model, cfg)
    return run.state


def _start(model, opt, sched, cfg: LoopConfig, resume: bool, log) -> _Run:
    """The wrapped model, EMA, generators and state: fresh, or from last.pt when resuming."""
    dist = cfg.dist
    net = wrap(model, dist, cfg.device, find_unused=cfg.before_epoch is not None)  # what training forwards call
    run = _Run(net, EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None, LoopState(),
               np.random.default_rng(cfg.seed),
               torch.Generator().manual_seed(cfg.seed + RANK_SEED_STRIDE * dist.rank))  # augmentations differ by rank
    last_path = cfg.checkpoint_dir / "last.pt"
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        model.load_state_dict(ck["model"])
        run.best_weights = ck.get("best_model")  # absent in checkpoints written before it was added: best.pt then
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if run.ema is not None and "ema" in ck:
            run.ema.module.load_state_dict(ck["ema"])
            run.ema.updates = int(ck.get("ema_updates", 10_000))  # older checkpoints: past the warm-up
        run.state = LoopState(ck["epoch"], ck["best_score"], ck["best_epoch"], list(ck["history"]))
        run.rng = np.random.default_rng(cfg.seed + run.state.epoch)
        run.gen.manual_seed(cfg.seed + run.state.epoch + RANK_SEED_STRIDE * dist.rank)
        log(f"resumed after epoch {run.state.epoch} (best {run.state.best_score:.4f} at epoch {run.state.best_epoch})")
    return run


def _train_epoch(run: _Run, model, images, labels, masks, loss_fn, opt, sched, cfg: LoopConfig):
    """One pass over the epoch's draw; returns (images seen, summed loss, start time) on this rank."""
    dev, dist = cfg.device, cfg.dist
    strength = torch.as_tensor(cfg.augment, dtype=torch.float32, device=dev)
    labels_t = torch.as_tensor(labels, device=dev)
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    n_classes = cfg.num_classes or int(labels.max()) + 1
    model.train()
    if cfg.before_epoch is not None:
        cfg.before_epoch(model, run.state.epoch)
    order = epoch_order(labels, cfg.balanced, run.rng)  # the same draw on every rank; each trains its share
    t0, seen, loss_sum = time.time(), 0, 0.0
    bar = tqdm(list(rank_batches(order, cfg.batch_size, dist)), desc=f"epoch {run.state.epoch + 1}/{cfg.epochs}",
               leave=False, mininterval=2.0, disable=None if dist.main else True)
    for idx in bar:
        x, target = batch_inputs(images, labels_t, masks, torch.as_tensor(idx, device=dev), strength, cfg, run.gen,
                                 n_classes)
        loss = train_step(run.net, model, x, target, loss_fn, opt, None if plateau else sched, run.ema, cfg.amp)
        seen += len(idx)
        loss_sum += loss * len(idx)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", ips=f"{seen / (time.time() - t0):.0f}")
    return seen, loss_sum, t0


def _end_epoch(run: _Run, model, validate, opt, sched, cfg: LoopConfig, seen, loss_sum, t0, log) -> None:
    """Validate (rank 0), log the epoch, remember the best weights, write the checkpoint."""
    dist, state = cfg.dist, run.state
    train_time = time.time() - t0
    seen, loss_sum = sum_across([seen, loss_sum], dist)  # every rank's images
    eval_model = run.ema.module if run.ema is not None else model
    metrics = from_main(validate(eval_model) if dist.main else None, dist)  # once, on the whole split
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(metrics["score"])
    state.epoch += 1
    row = {"epoch": state.epoch, "train_loss": round(loss_sum / max(seen, 1), 5),
           "lr": opt.param_groups[0]["lr"], "images_per_s": round(seen / max(train_time, 1e-9), 1),
           "epoch_s": round(time.time() - t0, 1), **{k: round(v, 5) for k, v in metrics.items()}}
    state.history.append(row)
    unstable = _unstable(metrics, state.history[:-1])
    improved = metrics["score"] > state.best_score and not unstable
    if unstable:
        log(f"epoch {state.epoch}: validation loss {metrics['val_loss']:.3g} is over {UNSTABLE_LOSS_RATIO:g}x the "
            "lowest so far (exploding outputs on some images): never kept as the best epoch")
    if improved:
        state.best_score, state.best_epoch = metrics["score"], state.epoch
        run.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in eval_model.state_dict().items()}
    log(" ".join(f"{k}={v}" for k, v in row.items()) + ("  *best*" if improved else ""))
    _checkpoint(run, model, opt, sched, cfg, improved)


def _checkpoint(run: _Run, model, opt, sched, cfg: LoopConfig, improved: bool) -> None:
    state = run.state
    ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
          "epoch": state.epoch, "best_score": state.best_score, "best_epoch": state.best_epoch,
          "history": state.history}
    if run.ema is not None:
        ck["ema"], ck["ema_updates"] = run.ema.module.state_dict(), run.ema.updates
    if run.best_weights is not None:
        ck["best_model"] = run.best_weights
    if cfg.dist.main:
        save_checkpoint(cfg.checkpoint_dir / "last.pt", ck)  # the record of this epoch: history, best score, weights
    if improved and cfg.dist.main:  # a convenience copy; a kill before this line leaves the previous one
        save_checkpoint(cfg.checkpoint_dir / "best.pt", {"model": run.best_weights, "epoch": state.epoch})


def _keep_weights(run: _Run, model, cfg: LoopConfig) -> None:
    """Load the weights the run ends with: the last epoch's (EMA) or the best validation epoch's."""
    state, best_path = run.state, cfg.checkpoint_dir / "best.pt"
    if cfg.keep == "last":
        if run.ema is not None:
            model.load_state_dict(run.ema.module.state_dict())
        state.kept_epoch = state.epoch
    elif run.best_weights is not None:
        model.load_state_dict(run.best_weights)
        state.kept_epoch = state.best_epoch
    elif best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path)["model"])
        state.kept_epoch = state.best_epoch


# ----------------------------------------------------------------------------- inference helpers
@torch.no_grad()
def batched_outputs(model, images_uint8: torch.Tensor, mean, std, device: torch.device,
                    batch_size: int = 128, channels_last: bool = False) -> torch.Tensor:
    """Model outputs (logits) for a uint8 Nx3xHxW tensor, in batches, returned on the CPU."""
    model.eval()
    outs = []
    for chunk in images_uint8.split(batch_size):
        x = normalize(chunk.to(device), mean, std, channels_last)
        outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(logits / T) (LBFGS on log T)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))
