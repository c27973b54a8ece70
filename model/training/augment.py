"""Training augmentations on whole batches of tensors, on whatever device the batch lives on:
geometry and colour jitter (per-sample strength), and mixup / CutMix with soft targets. The
dermatoscope-shift families are in model.training.shift."""
from __future__ import annotations

import math

import numpy as np

AUGMENT_STRENGTHS = {"none": 0.0, "light": 0.5, "medium": 1.0, "strong": 1.5}


def augment_batch(x, strength, generator=None, masks=None):
    """Random dermoscopy augmentations for a float batch in [0, 1] (Nx3xHxW), on its device.

    Flips, 90-degree turns plus free rotation, scale/translation (one affine warp with
    reflection padding, so no black corners), then brightness/contrast/saturation/hue jitter.
    `strength` is a float or a per-sample tensor (per-class strength); 0 leaves a sample as is.
    Masks (Nx1xHxW float) get the same geometry and no colour change.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    dev = x.device
    s = torch.as_tensor(strength, dtype=x.dtype, device=dev).expand(n).clone()
    active = (s > 0).to(x.dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev, x.dtype)

    # geometry: flip, rotation (k*90 + free), scale, shift
    flip_x = torch.where((rand(n) < 0.5) & (active > 0), -1.0, 1.0).to(dev, x.dtype)
    flip_y = torch.where((rand(n) < 0.5) & (active > 0), -1.0, 1.0).to(dev, x.dtype)
    quarter = torch.floor(rand(n) * 4) * (math.pi / 2)
    free = (rand(n) * 2 - 1) * (math.pi / 6) * s.clamp(max=1.0)
    angle = (quarter + free) * active
    scale = 1 + (rand(n) * 2 - 1) * 0.15 * s  # >1 zooms in
    shift = (rand(n, 2) * 2 - 1) * 0.08 * s[:, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    # a rotation in pixel space expressed in normalised coordinates (non-square images)
    a = h / w
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = cos * flip_x / scale
    theta[:, 0, 1] = -sin * a * flip_y / scale
    theta[:, 1, 0] = sin / a * flip_x / scale
    theta[:, 1, 1] = cos * flip_y / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    out_masks = None
    if masks is not None:
        out_masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="reflection",
                                  align_corners=False)

    # colour: brightness, contrast, saturation, hue (rotation about the gray axis)
    sv = s.view(n, 1, 1, 1)
    bright = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.2 * sv
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.2 * sv
    sat = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.2 * sv
    hue = (rand(n) * 2 - 1) * 0.05 * s * 2 * math.pi
    out = out * bright
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - gray) * sat + gray
    out = _rotate_hue(out, hue)
    return out.clamp_(0, 1), out_masks


def _rotate_hue(x, radians):
    """Rotate hue by an angle per sample (Rodrigues rotation about the (1,1,1) axis)."""
    import torch

    cos, sin = torch.cos(radians), torch.sin(radians)
    k = 1 / 3
    sq = math.sqrt(1 / 3)
    n = x.shape[0]
    m = torch.empty(n, 3, 3, device=x.device, dtype=x.dtype)
    m[:, 0, 0] = cos + (1 - cos) * k
    m[:, 0, 1] = k * (1 - cos) - sq * sin
    m[:, 0, 2] = k * (1 - cos) + sq * sin
    m[:, 1, 0] = k * (1 - cos) + sq * sin
    m[:, 1, 1] = cos + k * (1 - cos)
    m[:, 1, 2] = k * (1 - cos) - sq * sin
    m[:, 2, 0] = k * (1 - cos) - sq * sin
    m[:, 2, 1] = k * (1 - cos) + sq * sin
    m[:, 2, 2] = cos + k * (1 - cos)
    return torch.einsum("nij,njhw->nihw", m, x)


def mix_batch(x, targets, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, generator=None):
    """Mixup or CutMix a float batch (Nx3xHxW) with its own reversal; `targets` are NxC soft labels.

    Each batch is mixed by one of the two (an even draw when both alphas are set) with a weight
    lam ~ Beta(alpha, alpha): mixup blends whole images; CutMix pastes a box of about 1 - lam of
    the area, and lam becomes the share actually left once the box is clipped to the image. The
    labels are mixed with the same weight. Returns (images, targets, lam); alphas of 0 change nothing.
    """
    import torch

    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, targets, 1.0
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)  # Beta has no torch sampler that takes a generator
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    flipped_x, flipped_t = x.flip(0), targets.flip(0)
    if use_cutmix:
        h, w = x.shape[2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(round(h * cut)), int(round(w * cut))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = flipped_x[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    else:
        x = x * lam + flipped_x * (1.0 - lam)
    return x, targets * lam + flipped_t * (1.0 - lam), lam
