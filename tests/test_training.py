"""Training pieces (calibration, imbalance, schedule, checkpoints) and train.py smoke runs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import train_bundle
from model.nets.bundle import load_bundle, read_meta
from model.data.dataset import read_split
from model.training.loop import (EMA, class_weights, dice_bce_loss, epoch_order, fit_temperature, load_checkpoint,
                            make_optimizer, make_scheduler, save_checkpoint)


# ----------------------------------------------------------------------------- temperature scaling
@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(t_true):
    rng = np.random.default_rng(int(t_true * 10))
    n, k = 20000, 5
    z = rng.normal(0, 3, (n, k))
    p = np.exp(z / t_true)
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)  # labels drawn from softmax(z / T)
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.07)


def test_fit_temperature_overconfident_logits_get_t_above_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    z = rng.normal(0, 1, (3000, 3))
    z[np.arange(3000), y] += 1.0
    t_ok = fit_temperature(z, y)
    assert fit_temperature(z * 4, y) == pytest.approx(4 * t_ok, rel=0.05)


# ----------------------------------------------------------------------------- imbalance
def test_class_weights():
    labels = np.array([0, 0, 0, 1])
    w = class_weights(labels, 2)
    assert w.dtype == torch.float32
    assert float(w[1] / w[0]) == pytest.approx(3.0)  # inverse frequency
    assert float(w[torch.as_tensor(labels)].mean()) == pytest.approx(1.0)  # mean sample weight 1
    labels = np.array([0] * 90 + [1] * 9 + [2])
    w = class_weights(labels, 4)  # class 3 absent: finite weight, no division by zero
    assert torch.isfinite(w).all()
    assert float(w[1] / w[0]) == pytest.approx(10.0) and float(w[2] / w[0]) == pytest.approx(90.0)
    assert float(w[torch.as_tensor(labels)].mean()) == pytest.approx(1.0)


def test_epoch_order_plain_is_a_permutation():
    labels = np.array([0] * 90 + [1] * 10)
    order = epoch_order(labels, False, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(100))
    assert order.tolist() != list(range(100))
    np.testing.assert_array_equal(order, epoch_order(labels, False, np.random.default_rng(0)))


def test_epoch_order_balanced_draws_classes_equally():
    labels = np.array([0] * 180 + [1] * 15 + [2] * 5)
    rng = np.random.default_rng(0)
    drawn = np.concatenate([labels[epoch_order(labels, True, rng)] for _ in range(50)])
    assert len(drawn) == 50 * 200
    share = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.03)
    one = epoch_order(labels, True, np.random.default_rng(1))
    assert len(one) == len(labels) and len(set(one.tolist())) < len(labels)  # with replacement


def test_epoch_order_square_root_sampling():
    """--imbalance sqrt: a class of n images is drawn in proportion to sqrt(n)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import train

    args = train.parse_args(["classify", "--data", "d", "--out", "o", "--imbalance", "sqrt"])
    power = train.SAMPLING_BALANCE[args.imbalance]
    assert power == 0.5 and train.SAMPLING_BALANCE["balanced"] == 1.0 and "weighted" not in train.SAMPLING_BALANCE
    labels = np.array([0] * 180 + [1] * 15 + [2] * 5)
    rng = np.random.default_rng(0)
    drawn = np.concatenate([labels[epoch_order(labels, power, rng)] for _ in range(50)])
    expected = np.sqrt([180, 15, 5]) / np.sqrt([180, 15, 5]).sum()
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / len(drawn), expected, atol=0.02)


# ----------------------------------------------------------------------------- losses, schedule, EMA, checkpoints
def test_dice_bce_loss_prefers_the_right_mask():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good = dice_bce_loss((target * 2 - 1) * 10, target)
    bad = dice_bce_loss((1 - target * 2) * 10, target)
    assert float(good) < 0.01 < 1.5 < float(bad)


def test_cosine_schedule_with_warmup():
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model, "adamw", 1.0, 0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # no decay on biases
    sched = make_scheduler(opt, "cosine", epochs=10, steps_per_epoch=10, warmup_epochs=1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decreasing
    assert lrs[-1] < 0.05
    with pytest.raises(ValueError):
        make_optimizer(model, "rmsprop", 1.0, 0.0)


def test_ema_moves_towards_the_model():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, 0.9)
    ema.updates = 1000  # past the warm-up: the full decay
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, before + 0.1)


def test_ema_decay_warms_up_so_the_init_is_forgotten():
    """The first updates follow the model closely ((1 + n) / (10 + n)); the set decay is the cap."""
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, 0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    start = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for _ in range(100):
        ema.update(model)
    # a fixed 0.999 would still be 90% the initial weights after 100 steps; the warm-up is < 10%
    assert (ema.module.weight - start - 1.0).abs().max() < 0.1
    ema.updates = 10**6
    assert ema.current_decay() == 0.999


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"epoch": 1}]})
    ck = load_checkpoint(path)
    assert ck["epoch"] == 3 and torch.equal(ck["model"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


# ----------------------------------------------------------------------------- train.py smoke runs
def test_classifier_smoke_bundle(tiny_classifier_dir):
    out = tiny_classifier_dir
    meta = read_meta(out)
    assert meta["task"] == "classify" and meta["arch"] == "test_resnet"
    assert meta["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert meta["input_size"] == [64, 80]
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert 0.05 <= meta["temperature"] <= 20
    assert len(meta["history"]) == 1 and meta["history"][0]["epoch"] == 1
    assert {"train_loss", "val_balanced_accuracy", "lr"} <= set(meta["history"][0])
    splits, h = read_split(out / "split.json")
    assert meta["split"]["hash"] == h and meta["split"]["seed"] == 0
    test = meta["metrics"]["test"]
    assert test["n"] == len(splits["test"]) == 7
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "ece", "confusion_matrix", "melanoma_sensitivity"):
        assert key in test
    assert 0 <= test["balanced_accuracy"] <= 1
    assert meta["data"]["counts"] == {c: 6 for c in meta["classes"]}
    assert meta["data"]["split_sizes"] == {k: len(v) for k, v in splits.items()}
    assert meta["command"].startswith("python train.py classify")
    assert meta["quality"]["ood_threshold"] > 0
    assert (out / "extras.safetensors").is_file()
    assert load_bundle(out).classes == meta["classes"]


def test_segmenter_smoke_bundle(tiny_segmenter_dir):
    meta = read_meta(tiny_segmenter_dir)
    assert meta["task"] == "segment" and meta["arch"] == "tu-test_resnet"
    assert meta["input_size"] == [64, 96] and meta["threshold"] == 0.5
    assert meta["arch_kwargs"]["decoder_channels"]
    assert len(meta["history"]) == 1 and "val_dice" in meta["history"][0]
    test = meta["metrics"]["test"]
    assert test["n"] >= 1 and 0 <= test["mean_dice"] <= 1 and "thresholded_jaccard" in test
    assert "per_image_dice" not in test
    assert meta["split"]["hash"] == read_split(tiny_segmenter_dir / "split.json")[1]
    b = load_bundle(tiny_segmenter_dir)
    assert b.model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_resume_continues_training(tmp_path, tiny_classifier_dir, capsys):
    out = tmp_path / "resumable"
    # reuse the fixture bundle's split file: the run must keep exactly that split
    split = ["--split", str(tiny_classifier_dir / "split.json")]
    train_bundle("classify", out, split)
    first = read_meta(out)["history"]
    assert len(first) == 1
    capsys.readouterr()
    train_bundle("classify", out, [*split, "--epochs", "2", "--resume"])
    assert "resumed after epoch 1" in capsys.readouterr().out
    meta = read_meta(out)
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["history"][0] == first[0]
    assert meta["split"]["hash"] == read_meta(tiny_classifier_dir)["split"]["hash"]
    assert (out / "split.json").read_text() == (tiny_classifier_dir / "split.json").read_text()
    load_bundle(out)


def test_training_skips_unreadable_images(ham_small, tmp_path):
    data = tmp_path / "damaged"
    shutil.copytree(ham_small, data)
    with open(data / "metadata.csv", newline="") as f:
        ids = [r["image_id"] for r in csv.DictReader(f)]
    (data / "images" / f"{ids[0]}.jpg").write_text("not an image")
    (data / "images" / f"{ids[1]}.jpg").unlink()
    out = train_bundle("classify", tmp_path / "bundle", data=data)
    meta = read_meta(out)
    assert meta["data"]["counts"]["akiec"] == 5  # the missing file is not a record
    splits, _ = read_split(out / "split.json")
    assert ids[1] not in sum(splits.values(), [])
    skipped = meta["data"]["skipped_unreadable"] + len(meta["metrics"]["test"].get("skipped", []))
    assert skipped == 1


def test_train_reports_missing_data(tmp_path, capsys):
    import train

    rc = train.main(["classify", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"), "--epochs", "1"])
    assert rc == 2
    assert "error: Data folder not found" in capsys.readouterr().err
    assert not (tmp_path / "b" / "weights.safetensors").exists()


def test_an_epoch_with_exploding_validation_loss_is_never_kept_as_best(tmp_path):
    """The loop keeps the best *stable* epoch: a higher score that comes with a validation loss
    over 3x the lowest so far (or not finite) is logged and passed over."""
    from model.training.loop import LoopConfig, fit, make_optimizer, make_scheduler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = np.arange(16) % 2
    script = iter([(0.50, 1.0), (0.70, 0.9), (0.95, 22.0), (0.90, float("nan")), (0.60, 0.95)])

    def validate(m):
        score, loss = next(script)
        return {"score": score, "val_loss": loss}

    opt = make_optimizer(model, "adamw", 1e-3, 0.0)
    cfg = LoopConfig(epochs=5, batch_size=8, augment=0.0, balanced=False, mean=[0.5] * 3, std=[0.25] * 3,
                     device=torch.device("cpu"), channels_last=False, amp=False, patience=10, seed=0,
                     checkpoint_dir=tmp_path / ".train")
    logged = []
    state = fit(model, images, labels, None, lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y), validate,
                opt, make_scheduler(opt, "cosine", 5, 2, 0.0), cfg, log=logged.append)
    assert state.epoch == 5 and state.best_epoch == 2 and state.best_score == pytest.approx(0.70)
    assert state.kept_epoch == 2
    assert sum("never kept as the best epoch" in line for line in logged) == 2


def test_logit_adjusted_loss_leaves_raw_logits_balanced():
    """Trained on natural (imbalanced) labels with log prior added, a bias-only model's raw logits
    come out equal for every class: the posterior under equally common classes. Plain
    cross-entropy on the same labels learns the prior instead."""
    from model.training.loop import log_prior

    labels = np.array([0] * 180 + [1] * 15 + [2] * 5)
    y = torch.as_tensor(labels)
    shift = log_prior(labels, 3)
    torch.testing.assert_close(shift.exp().sum(), torch.tensor(1.0))

    def fitted_bias(adjust: bool) -> torch.Tensor:
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.LBFGS([b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(b.expand(len(y), 3) + (shift if adjust else 0), y)
            loss.backward()
            return loss

        opt.step(closure)
        return torch.softmax(b.detach(), 0)

    torch.testing.assert_close(fitted_bias(True), torch.full((3,), 1 / 3), atol=1e-3, rtol=0)
    torch.testing.assert_close(fitted_bias(False), torch.tensor([0.9, 0.075, 0.025]), atol=1e-3, rtol=0)


def test_fit_with_mixup_passes_soft_targets_and_still_learns(tmp_path):
    """With mixup/CutMix on, the loss gets NxC class probabilities (rows summing to 1), and a
    separable toy problem is still learnt."""
    from model.training.loop import LoopConfig, fit, make_optimizer, make_scheduler

    torch.manual_seed(0)
    labels = np.arange(64) % 2
    images = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    images[labels == 1] = 200  # class 1 bright, class 0 dark
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
    seen = []

    def loss_fn(m, x, target):
        seen.append(target)
        return torch.nn.functional.cross_entropy(m(x), target)

    def validate(m):
        with torch.no_grad():
            x = (images.float() / 255 - 0.5) / 0.25
            acc = float((m(x).argmax(1).numpy() == labels).mean())
        return {"score": acc}

    opt = make_optimizer(model, "adamw", 1e-2, 0.0)
    cfg = LoopConfig(epochs=6, batch_size=16, augment=0.0, balanced=False, mean=[0.5] * 3, std=[0.25] * 3,
                     device=torch.device("cpu"), channels_last=False, amp=False, patience=10, seed=0,
                     checkpoint_dir=tmp_path / ".train", mixup=0.4, cutmix=1.0, num_classes=2)
    state = fit(model, images, labels, None, loss_fn, validate, opt, make_scheduler(opt, "cosine", 6, 4, 0.0), cfg,
                log=lambda _: None)
    assert all(t.shape == (16, 2) and t.dtype == torch.float32 for t in seen)
    assert all(torch.allclose(t.sum(1), torch.ones(16)) for t in seen)
    assert any(((t > 0) & (t < 1)).any() for t in seen)  # some labels really are mixed
    assert state.best_score == 1.0


def test_train_cli_logit_adjusted_with_mixing(tmp_path):
    """train.py accepts the logit-adjusted loss with mixup and CutMix, and records them."""
    out = train_bundle("classify", tmp_path / "b", ["--imbalance", "logit-adjust", "--mixup", "0.2", "--cutmix", "1.0"])
    meta = read_meta(out)
    cfg = meta["train_config"]
    assert (cfg["imbalance"], cfg["mixup"], cfg["cutmix"]) == ("logit-adjust", 0.2, 1.0)
    assert "--imbalance logit-adjust --mixup 0.2 --cutmix 1.0" in meta["command"]
    assert np.isfinite(meta["history"][0]["train_loss"])
    assert load_bundle(out).classes == meta["classes"]


def test_hardware_summary_names_the_processor():
    from model.nets.machine import cpu_model
    from model.nets.machine import hardware_summary

    summary = hardware_summary(torch.device("cpu"))
    assert cpu_model() and summary.startswith(f"CPU ({cpu_model()}), ")
    assert f"{torch.get_num_threads()} torch threads" in summary
