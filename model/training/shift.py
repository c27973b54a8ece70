"""Training augmentations for what changes between dermatoscopes and clinics.

Each family is a `train.py --shift` option and is applied to a random half of every batch (a
third for the vignette), after the geometric and colour jitter of `model.training.augment.augment_batch`:

- colour-cast: a white-balance error, one gain per channel (+-15%);
- gamma: a tone curve, exponent in [0.7, 1.4];
- brightness: exposure, x0.7 to x1.3;
- blur: defocus or sharpening, a blend towards (or away from) a Gaussian-blurred copy;
- jpeg: a JPEG round trip at quality 30-95;
- scale: a resolution loss (down by up to 2.5x and back up) and a zoom of 0.8-1.3x;
- vignette: dark corners of a round dermatoscope field, darkening up to 90% at the corners.

Works on float batches in [0, 1] (Nx3xHxW) on any device; the JPEG step runs on the CPU.
"""
from __future__ import annotations

import math

import numpy as np

SHIFT_FAMILIES = ("colour-cast", "gamma", "brightness", "blur", "jpeg", "scale", "vignette")


def parse_shift(value: str | list[str] | None) -> tuple[str, ...]:
    """'colour-cast,gamma' or ['all'] -> the families, in SHIFT_FAMILIES order; unknown names raise."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    names = {i.strip() for i in items if i.strip()}
    if "all" in names:
        return SHIFT_FAMILIES
    unknown = names - set(SHIFT_FAMILIES)
    if unknown:
        raise ValueError(f"unknown --shift famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(SHIFT_FAMILIES)} or all")
    return tuple(f for f in SHIFT_FAMILIES if f in names)


def shift_batch(x, families, generator=None):
    """Apply the named dermatoscope-shift families to a float batch in [0, 1]; returns a new batch."""
    import torch

    if not families:
        return x
    n = x.shape[0]

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(x.device, x.dtype)

    def chosen(p=0.5):
        return (rand(n) < p).to(x.dtype).view(n, 1, 1, 1)

    out = x
    if "scale" in families:
        out = _rescale(out, rand, chosen())
    if "blur" in families:
        out = _blur_or_sharpen(out, rand, chosen())
    if "colour-cast" in families:
        gains = 1 + (rand(n, 3, 1, 1) * 2 - 1) * 0.15
        out = out * (1 + (gains - 1) * chosen())
    if "brightness" in families:
        out = out * (1 + (0.7 + rand(n, 1, 1, 1) * 0.6 - 1) * chosen())
    if "gamma" in families:
        gamma = torch.exp(math.log(0.7) + rand(n, 1, 1, 1) * (math.log(1.4) - math.log(0.7)))
        out = out.clamp(1e-6, 1) ** (1 + (gamma - 1) * chosen())
    if "vignette" in families:
        out = out * _vignette(out, rand, chosen(1 / 3))
    out = out.clamp(0, 1)
    if "jpeg" in families:
        out = _jpeg(out, rand, chosen())
    return out


def _rescale(x, rand, pick):
    """Zoom (0.8-1.3x about the centre, reflection padding) and a resolution loss (down, then up)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    zoom = 0.8 + rand(n) * 0.5
    zoom = 1 + (zoom - 1) * pick.view(n)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1 / zoom
    theta[:, 1, 1] = 1 / zoom
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    factor = 1 + rand(n) * 1.5
    out = x.clone()
    for i in torch.nonzero(pick.view(n) > 0).flatten().tolist():
        f = float(factor[i])
        small = F.interpolate(x[i:i + 1], size=(max(8, int(h / f)), max(8, int(w / f))), mode="bilinear",
                              antialias=True, align_corners=False)
        out[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def _blur_or_sharpen(x, rand, pick):
    """Blend towards a Gaussian blur (sigma 1.2; weight 0..1) or away from it (sharpening, 0..0.8)."""
    import torch
    import torch.nn.functional as F

    n, c = x.shape[:2]
    r = torch.arange(-3, 4, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-(r ** 2) / (2 * 1.2 ** 2))
    k1 = k1 / k1.sum()
    padded = F.pad(x, (3, 3, 3, 3), mode="reflect")
    blurred = F.conv2d(padded, k1.view(1, 1, 1, 7).repeat(c, 1, 1, 1), groups=c)
    blurred = F.conv2d(blurred, k1.view(1, 1, 7, 1).repeat(c, 1, 1, 1), groups=c)
    amount = rand(n, 1, 1, 1) * 1.8 - 0.8  # < 0 sharpens
    return x + (blurred - x) * amount * pick


def _vignette(x, rand, pick):
    """A multiplicative radial fall-off: 1 at the centre, 1 - depth at the far corners."""
    import torch

    n, _, h, w = x.shape
    yy = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    r = torch.sqrt(yy ** 2 + xx ** 2) / math.sqrt(2)
    depth = (0.3 + rand(n, 1, 1, 1) * 0.6) * pick
    power = 2 + rand(n, 1, 1, 1) * 3
    return 1 - depth * r ** power


def _jpeg(x, rand, pick):
    """JPEG round trip (quality 30-95) of the picked images, through OpenCV on the CPU."""
    import cv2
    import torch

    out = x.clone()
    quality = (30 + rand(x.shape[0]) * 65).round()
    for i in torch.nonzero(pick.flatten() > 0).flatten().tolist():
        img = (x[i].detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
        if ok:
            dec = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
            out[i] = torch.from_numpy(dec).permute(2, 0, 1).to(x.device, x.dtype) / 255.0
    return out
