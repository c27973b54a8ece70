"""Make the set of images that are not dermoscopy, which the quality gate must flag:

    python -m tools.not_dermoscopy tests/data/not-dermoscopy      # writes 48 images, seeded

Six kinds, eight each, all drawn here with PIL and numpy (no outside source, so no licence
question): documents, screenshots of software, charts, outdoor photographs (synthetic scenes),
indoor photographs, and clinical close-ups of skin taken without a dermatoscope (a wide field of
skin with a small mole, hair, pores and clothing or background at the edges). Sizes and JPEG/PNG
vary as uploads do. The same seed gives the same files.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("document", "screenshot", "chart", "outdoor", "indoor", "clinical")
PER_KIND = 8
SIZES = ((800, 600), (1024, 768), (640, 480), (1200, 900), (600, 450), (900, 1200), (480, 640), (1280, 720))


def _words(draw, rng, x0, y0, x1, y1, line_h, ink):
    y = y0
    while y + line_h < y1:
        x = x0
        while x < x1 - 40:
            w = int(rng.integers(15, 70))
            draw.rectangle([x, y, min(x + w, x1), y + max(3, line_h // 3)], fill=ink)
            x += w + int(rng.integers(6, 14))
        y += line_h


def document(rng, size):
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(235, 256, 3)))
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([w * 0.08, h * 0.06, w * 0.7, h * 0.06 + 18], fill=(20, 20, 20))
    _words(d, rng, int(w * 0.08), int(h * 0.14), int(w * 0.92), int(h * 0.92), int(rng.integers(14, 24)),
           (40, 40, 40))
    d.text((w * 0.08, h * 0.95), "page 1", fill=(0, 0, 0))
    return img


def screenshot(rng, size):
    w, h = size
    img = Image.new("RGB", size, (245, 246, 248))
    d = ImageDraw.Draw(img)
    bar = tuple(int(v) for v in rng.integers(30, 120, 3))
    d.rectangle([0, 0, w, 36], fill=bar)
    d.rectangle([0, 36, int(w * 0.2), h], fill=(225, 228, 232))
    for i in range(int(rng.integers(4, 9))):
        y = 60 + i * 40
        d.rectangle([10, y, int(w * 0.2) - 10, y + 22], fill=(200, 204, 210))
    for i in range(int(rng.integers(2, 5))):
        x0, y0 = int(w * 0.25) + i * 30, 60 + i * int(h * 0.2)
        d.rectangle([x0, y0, x0 + int(w * 0.5), y0 + int(h * 0.15)], outline=(150, 150, 160), fill=(255, 255, 255))
        _words(d, rng, x0 + 10, y0 + 10, x0 + int(w * 0.5) - 10, y0 + int(h * 0.15) - 10, 16, (60, 60, 70))
    d.rectangle([int(w * 0.8), h - 60, int(w * 0.95), h - 30], fill=(30, 110, 220))
    return img


def chart(rng, size):
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.line([60, h - 50, w - 30, h - 50], fill=(0, 0, 0), width=2)
    d.line([60, 30, 60, h - 50], fill=(0, 0, 0), width=2)
    n = int(rng.integers(5, 12))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    if rng.random() < 0.5:
        bw = (w - 120) // n
        for i in range(n):
            top = int(rng.integers(60, h - 80))
            d.rectangle([70 + i * bw, top, 70 + i * bw + bw - 8, h - 51], fill=colours[i % 4])
    else:
        for c in colours[: int(rng.integers(1, 4))]:
            ys = np.cumsum(rng.normal(0, 20, n)) + h / 2
            pts = [(60 + i * (w - 100) / (n - 1), float(np.clip(y, 40, h - 60))) for i, y in enumerate(ys)]
            d.line(pts, fill=c, width=3)
    for i in range(5):
        d.line([55, 50 + i * (h - 100) / 5, 60, 50 + i * (h - 100) / 5], fill=(0, 0, 0))
    return img


def _gradient(h, w, top, bottom):
    t = np.linspace(0, 1, h)[:, None, None]
    return (np.asarray(top, float) * (1 - t) + np.asarray(bottom, float) * t) * np.ones((1, w, 1))


def outdoor(rng, size):
    w, h = size
    sky = _gradient(h, w, rng.integers(60, 140, 3) + [0, 40, 110], [200, 220, 240])
    horizon = int(h * rng.uniform(0.45, 0.7))
    ground = _gradient(h - horizon, w, [60, 110 + rng.integers(0, 40), 40], [30, 70, 20])
    arr = sky.copy()
    arr[horizon:] = ground
    xs = np.arange(w)
    hills = (horizon - 40 * np.sin(xs / w * np.pi * rng.uniform(1, 3)) - 30).astype(int)
    for x in range(w):
        arr[hills[x]:horizon, x] = [70, 100, 60]
    arr += rng.normal(0, 6, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    cx, cy = int(w * rng.uniform(0.1, 0.9)), int(h * rng.uniform(0.08, 0.3))
    d.ellipse([cx - 25, cy - 25, cx + 25, cy + 25], fill=(255, 240, 180))
    for _ in range(int(rng.integers(2, 6))):  # trees
        x = int(rng.integers(0, w))
        d.rectangle([x, horizon - 60, x + 10, horizon + 10], fill=(80, 50, 30))
        d.ellipse([x - 35, horizon - 120, x + 45, horizon - 40], fill=(30, int(rng.integers(80, 130)), 40))
    return img.filter(ImageFilter.GaussianBlur(0.8))


def indoor(rng, size):
    w, h = size
    wall = rng.integers(150, 230, 3)
    arr = np.ones((h, w, 3)) * wall
    floor_y = int(h * rng.uniform(0.6, 0.8))
    arr[floor_y:] = [120, 80, 50] + rng.integers(-20, 20, 3)
    arr += rng.normal(0, 5, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    wx = int(w * rng.uniform(0.1, 0.5))
    d.rectangle([wx, int(h * 0.15), wx + int(w * 0.3), int(h * 0.5)], fill=(170, 210, 250), outline=(255, 255, 255),
                width=8)
    d.rectangle([int(w * 0.55), floor_y - int(h * 0.25), int(w * 0.9), floor_y], fill=(90, 60, 40))  # a table
    d.ellipse([int(w * 0.6), floor_y - int(h * 0.33), int(w * 0.68), floor_y - int(h * 0.25)], fill=(200, 40, 40))
    return img.filter(ImageFilter.GaussianBlur(1.0))


def clinical(rng, size):
    """Skin photographed without a dermatoscope: a wide field, the mole a few percent of it, uneven
    light, pores and hair, and clothing or background at one edge."""
    w, h = size
    base = np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(95, 140)])
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1 + 0.25 * ((xx / w) - 0.5) * rng.choice([-1, 1]) - 0.15 * ((yy / h) - 0.5) ** 2
    arr = base * light[..., None] + rng.normal(0, 4, (h, w, 3))
    pores = rng.random((h, w)) < 0.004
    arr[pores] *= 0.85
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    d = ImageDraw.Draw(img)
    cx, cy = int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65))
    r = int(min(w, h) * rng.uniform(0.02, 0.05))
    d.ellipse([cx - r, cy - int(r * 0.8), cx + r, cy + int(r * 0.8)], fill=(int(base[0] * 0.45), int(base[1] * 0.35),
                                                                            int(base[2] * 0.3)))
    for _ in range(int(rng.integers(10, 40))):  # hair
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.line([x, y, x + int(rng.integers(-60, 60)), y + int(rng.integers(20, 80))], fill=(60, 40, 30), width=1)
    edge = rng.choice(["top", "bottom", "left", "right"])
    cloth = tuple(int(v) for v in rng.integers(20, 200, 3))
    box = {"top": [0, 0, w, int(h * 0.15)], "bottom": [0, int(h * 0.85), w, h],
           "left": [0, 0, int(w * 0.15), h], "right": [int(w * 0.85), 0, w, h]}[edge]
    d.rectangle(box, fill=cloth)
    return img


DRAW = {"document": document, "screenshot": screenshot, "chart": chart, "outdoor": outdoor, "indoor": indoor,
        "clinical": clinical}


def make(out: Path, seed: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, kind in enumerate(KINDS):
        for i in range(PER_KIND):
            rng = np.random.default_rng([seed, k, i])
            img = DRAW[kind](rng, SIZES[(i + k) % len(SIZES)])
            fmt = "PNG" if kind in ("document", "screenshot", "chart") and i % 2 == 0 else "JPEG"
            path = out / f"{kind}-{i:02d}.{'png' if fmt == 'PNG' else 'jpg'}"
            buf = io.BytesIO()
            img.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {"optimize": True}))
            path.write_bytes(buf.getvalue())
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.not_dermoscopy", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = make(args.out, args.seed)
    print(f"{len(files)} images written to {args.out} ({sum(p.stat().st_size for p in files) / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
