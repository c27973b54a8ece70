"""CAMs at the last stage from a forward-only pass (an engine's outputs), without a backward pass
through the network.

After the last stage, timm CNNs end in a short head: global average pooling and a linear layer,
sometimes after a 1x1 conv + norm + activation (EfficientNet's conv_head/bn2). For a pooled
linear head, d logit_c / d A[k, i, j] = W[c, k] / (h * w) for every position: the gradient is the
class's weight spread evenly, so Grad-CAM on that map is CAM, and every method of
`model.explain.cams` follows from the forward pass alone:

  gradcam, hirescam  sum_k W[c,k]/hw * A_k              (equal: the gradient is constant in space)
  xgradcam           sum_k W[c,k]/hw * A_k * S_k/(S_k + 1e-7), S_k = sum A_k
  layercam           sum_k relu(W[c,k])/hw * A_k
  gradcam++          alpha_k = g^2 / (2 g^2 + S_k g^3), w_k = hw relu(g) alpha_k, g = W[c,k]/hw
  eigencam           needs no gradient at all

When a small head sits between the last stage and the pooling (1x1 conv, norm, activation), the
gradient is no longer constant, but it depends only on the last stage's map: it is taken through
those few layers alone (`head_gradient`, microseconds on a 5x7 map), never through the body. The
same formulas as model.explain.cams then give identical CAMs (tests/test_engine_cam.py checks every
method against pytorch-grad-cam on the same layer). Earlier layers truly need the body's
gradients and stay with torch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from model.explain.cams import ForwardResult, method_cam


def _tail(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What maps the last stage's output to forward_head's input (timm families)."""
    if type(model).__name__ == "EfficientNet" and hasattr(model, "conv_head") and hasattr(model, "bn2"):
        return lambda a: model.bn2(model.conv_head(a))
    return lambda a: a


def _pooled_linear(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The linear layer when forward_head is exactly global average pooling + Linear (+ eval dropout)."""
    pool = getattr(model, "global_pool", None)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if getattr(pool, "pool_type", None) != "avg" or not isinstance(head, torch.nn.Linear):
        return None
    return head


class LastStageCam:
    """CAMs at a classifier's last stage from that stage's map (forward outputs only).

    Built once per model; `supported` is False when the head is not one this module can follow
    (the caller then uses model.explain.cams's full backward pass)."""

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int]):
        self.model = model
        self.tail = _tail(model)
        self.linear = _pooled_linear(model)
        self.closed_form = False
        self.supported = self._verify(input_size)

    def _verify(self, input_size) -> bool:
        """The head followed from the last stage must give the model's own logits."""
        from model.nets.classifier import feature_layers

        try:
            dev = next(self.model.parameters()).device
            x = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0)).to(dev)
            n = len(feature_layers(self.model))
            with torch.inference_mode():
                final, inter = self.model.forward_intermediates(x, indices=[n - 1])
                want = self.model.forward_head(final)
                got = self.model.forward_head(self.tail(inter[-1]))
                ok = torch.allclose(got, want, atol=1e-5, rtol=1e-4)
                a = inter[-1]
                if ok and self.linear is not None and self.tail(a) is a and a.shape[1] == self.linear.in_features:
                    lin = a.mean(dim=(2, 3)) @ self.linear.weight.T + self.linear.bias
                    self.closed_form = bool(torch.allclose(lin, want, atol=1e-5, rtol=1e-4))
            return bool(ok)
        except Exception:  # noqa: BLE001 - any model this cannot follow falls back to torch
            return False

    def head_gradient(self, a: torch.Tensor, cls: int) -> torch.Tensor:
        """d logit_cls / d a for one (C, h, w) last-stage map, from the head alone."""
        if self.closed_form:
            w = self.linear.weight[cls].detach().float() / (a.shape[1] * a.shape[2])
            return w[:, None, None].expand_as(a)
        a = a.detach().clone()[None].requires_grad_(True)
        with torch.enable_grad():
            logit = self.model.forward_head(self.tail(a))[0, cls]
            return torch.autograd.grad(logit, a)[0][0].detach()

    def explain(self, out: dict[str, np.ndarray], stage: int, cam_class: int | None, methods,
                feature_stage: int | None = None, n_feature_maps: int = 16) -> ForwardResult:
        """ForwardResult (as model.explain.cams.forward_explain) from an engine's outputs for one image:
        `logits`, `features`, and `stage{i}` for the last stage (and the feature-map stage)."""
        logits = out["logits"][0]
        cls = int(logits.argmax()) if cam_class is None else int(cam_class)
        dev = next(self.model.parameters()).device
        a = torch.as_tensor(out[f"stage{stage}"][0], device=dev).float()
        grad_methods = [m for m in methods if m != "eigencam"]
        g = self.head_gradient(a, cls) if grad_methods else None
        cams = {m: method_cam(m, a, g).cpu().numpy() for m in methods}
        fmaps, channels, means = None, [], []
        if feature_stage is not None:
            f = torch.as_tensor(out[f"stage{feature_stage}"][0]).float()
            mean_act = f.mean(dim=(1, 2))
            order = torch.argsort(mean_act, descending=True)[:n_feature_maps]
            fmaps, channels, means = f[order].numpy(), order.tolist(), mean_act[order].tolist()
        return ForwardResult(np.asarray(logits, np.float32), np.asarray(out["features"][0], np.float32), cams,
                             cls, stage, fmaps, channels, means, a.cpu().numpy())
