"""Image decoding (orientation, modes, refusals), resizing, normalisation and augmentation."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from model.data.preprocess import (ImageError, channel_stats, decode_image, normalize, resize_map, resize_mask,
                                   resize_rgb, to_uint8_batch)
from model.training.augment import augment_batch

RED, BLUE = (230, 20, 20), (20, 20, 230)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _two_tone(w=40, h=20) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2:] = BLUE
    return Image.fromarray(arr)


def _close(pixel, colour, tol=40):
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) < tol))


# ----------------------------------------------------------------------------- decoding
def test_exif_rotated_jpeg_comes_out_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = _save(_two_tone(40, 20), "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (40, 20)  # stored landscape
    rgb = decode_image(data)
    assert rgb.shape == (40, 20, 3)  # displayed portrait
    # turning clockwise brings the stored left edge to the top
    assert _close(rgb[5, 10], RED) and _close(rgb[35, 10], BLUE)


def test_plain_jpeg_is_not_rotated(tmp_path):
    path = tmp_path / "a.jpg"
    _two_tone(40, 20).save(path, quality=95)
    rgb = decode_image(path)
    assert rgb.shape == (20, 40, 3)
    assert _close(rgb[10, 5], RED) and _close(rgb[10, 35], BLUE)


def test_16bit_png():
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)  # up to 65504
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    notes = []
    rgb = decode_image(_save(img, "PNG"), notes)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] >= 250  # full range, not clipped to 255 counts
    assert np.all(np.diff(rgb[:, :, 0].ravel().astype(int)) >= 0)  # monotone like the source
    assert any("16-bit" in n for n in notes)


def test_cmyk_jpeg():
    img = Image.new("CMYK", (24, 16), (0, 255, 255, 0))  # red in CMYK
    notes = []
    rgb = decode_image(_save(img, "JPEG", quality=95), notes)
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8
    assert rgb[8, 12, 0] > 200 and rgb[8, 12, 1] < 60
    assert any("CMYK" in n for n in notes)


def test_rgba_is_flattened_on_white():
    arr = np.zeros((10, 12, 4), np.uint8)
    arr[:, :6] = (200, 10, 10, 255)  # opaque red
    arr[:, 6:] = (0, 0, 0, 0)  # fully transparent
    notes = []
    rgb = decode_image(_save(Image.fromarray(arr, "RGBA"), "PNG"), notes)
    assert rgb.shape == (10, 12, 3)
    assert tuple(rgb[5, 2]) == (200, 10, 10)
    assert tuple(rgb[5, 10]) == (255, 255, 255)
    assert any("Transparency" in n for n in notes)


def test_palette_and_grayscale():
    pal = _two_tone().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    for fmt in ("PNG", "GIF", "BMP"):
        rgb = decode_image(_save(pal, fmt))
        assert rgb.shape == (20, 40, 3) and rgb.dtype == np.uint8
        assert _close(rgb[10, 5], RED) and _close(rgb[10, 35], BLUE)
    gray = Image.fromarray(np.full((9, 7), 77, np.uint8), "L")
    notes = []
    rgb = decode_image(_save(gray, "PNG"), notes)
    assert rgb.shape == (9, 7, 3) and np.all(rgb == 77)
    assert any("Grayscale" in n for n in notes)
    one_bit = Image.fromarray(np.eye(8, dtype=bool)).convert("1")
    rgb = decode_image(_save(one_bit, "PNG"))
    assert rgb.shape == (8, 8, 3) and rgb[0, 0, 0] == 255 and rgb[0, 1, 0] == 0


def test_webp_and_tiff_and_file_objects(tmp_path):
    for fmt in ("WEBP", "TIFF"):
        rgb = decode_image(io.BytesIO(_save(_two_tone(), fmt, **({"lossless": True} if fmt == "WEBP" else {}))))
        assert rgb.shape == (20, 40, 3)
        assert _close(rgb[10, 5], RED)


def test_real_dataset_images(ham_small, fullres):
    assert decode_image(next((ham_small / "images").glob("*.jpg"))).shape == (150, 200, 3)
    assert decode_image(next((fullres / "images").glob("*.jpg"))).shape == (450, 600, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (bytearray(), "empty"),
    (b"hello, this is a text file and not an image\n" * 3, "not an image"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "not an image"),
])
def test_unusable_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_raises_image_error(ham_small):
    data = next((ham_small / "images").glob("*.jpg")).read_bytes()
    for cut in (len(data) // 2, 200, 40):
        with pytest.raises(ImageError):
            decode_image(data[:cut])


@pytest.mark.parametrize("side", [8000, 30000, 65000])
def test_decompression_bomb_header_is_refused(side):
    data = _png_header_only(side, side)  # a few hundred bytes declaring a gigantic image
    assert len(data) < 500
    with pytest.raises(ImageError, match="(?i)large|pixels"):
        decode_image(data)


def test_max_pixels_guard():
    data = _save(_two_tone(40, 20), "PNG")
    assert decode_image(data, max_pixels=800).shape == (20, 40, 3)
    with pytest.raises(ImageError, match="pixels"):
        decode_image(data, max_pixels=799)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="No such file"):
        decode_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not a jpeg")
    with pytest.raises(ImageError):
        decode_image(str(tmp_path / "text.jpg"))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    notes = []
    rgb = decode_image(buf.getvalue(), notes)
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50
    assert any("first frame" in n for n in notes)


# ----------------------------------------------------------------------------- resizing, tensors
def test_resizing_shapes_and_types():
    img = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    assert resize_rgb(img, (64, 80)).shape == (64, 80, 3)
    assert resize_rgb(img, (300, 400)).shape == (300, 400, 3)
    assert resize_rgb(img, (150, 200)) is img
    mask = np.zeros((150, 200), bool)
    mask[50:100, 60:140] = True
    small = resize_mask(mask, (15, 20))
    assert small.dtype == bool and small.shape == (15, 20)
    assert abs(small.mean() - mask.mean()) < 0.05
    assert resize_map(np.ones((4, 5)), (8, 10)).shape == (8, 10)


def test_uint8_batch_normalize_and_stats():
    imgs = [np.full((10, 12, 3), v, np.uint8) for v in (0, 255)]
    x = to_uint8_batch(imgs, (5, 6))
    assert tuple(x.shape) == (2, 3, 5, 6) and x.dtype == torch.uint8
    mean, std = channel_stats(x)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3)
    z = normalize(x, mean, std)
    assert torch.allclose(z[0], torch.full_like(z[0], -1.0)) and torch.allclose(z[1], torch.full_like(z[1], 1.0))
    assert normalize(x, mean, std, channels_last=True).is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- augmentation
def _batch(n=6, h=32, w=48, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strength", [0.5, 1.0, 1.5])
def test_augment_keeps_shape_and_range(strength):
    x = _batch()
    out, masks = augment_batch(x.clone(), strength, torch.Generator().manual_seed(1))
    assert masks is None
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x, atol=1e-3)


def test_augment_strength_zero_is_identity():
    x = _batch()
    m = (x[:, :1] > 0.5).float()
    out, m_out = augment_batch(x.clone(), 0.0, torch.Generator().manual_seed(1), masks=m.clone())
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(m_out, m, atol=1e-5, rtol=0)


def test_augment_per_sample_strength():
    x = _batch(4)
    out, _ = augment_batch(x.clone(), torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.Generator().manual_seed(2))
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]], atol=1e-5, rtol=0)
    assert not torch.allclose(out[1], x[1], atol=1e-3) and not torch.allclose(out[3], x[3], atol=1e-3)


def test_augment_is_reproducible_with_a_generator():
    x = _batch()
    a, _ = augment_batch(x.clone(), 1.0, torch.Generator().manual_seed(5))
    b, _ = augment_batch(x.clone(), 1.0, torch.Generator().manual_seed(5))
    c, _ = augment_batch(x.clone(), 1.0, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_augment_masks_get_the_same_geometry():
    """An image whose content *is* its mask must still match its mask after augmentation."""
    n, h, w = 16, 40, 56
    mask = torch.zeros(n, 1, h, w)
    mask[:, :, 6:22, 8:20] = 1  # an asymmetric L shape, off centre
    mask[:, :, 16:22, 20:40] = 1
    image = mask.repeat(1, 3, 1, 1) * 0.8 + 0.1  # gray: hue/saturation jitter leave it gray
    out, m_out = augment_batch(image.clone(), 1.0, torch.Generator().manual_seed(3), masks=mask.clone())
    assert m_out.shape == mask.shape
    moved = 0
    for i in range(n):
        ch = out[i, 0]
        thresh = (ch.min() + ch.max()) / 2  # colour jitter is monotone on a gray image
        from_image = ch > thresh
        from_mask = m_out[i, 0] > 0.5
        agree = (from_image == from_mask).float().mean().item()
        assert agree > 0.98, f"sample {i}: image and mask disagree on {1 - agree:.1%} of pixels"
        moved += int((from_mask != (mask[i, 0] > 0.5)).float().mean().item() > 0.05)
    assert moved >= n // 2  # the geometry really changed for most samples
    # masks get no colour change: they stay within [0, 1] and keep their binary levels in the interior
    assert float(m_out.min()) >= 0.0 and float(m_out.max()) <= 1.0 + 1e-6


# ----------------------------------------------------------------------------- mixup / CutMix
def _mix_inputs(n=6, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 12, 16, generator=g)
    y = torch.nn.functional.one_hot(torch.arange(n) % classes, classes).float()
    return x, y


def test_mix_batch_with_no_alpha_changes_nothing():
    from model.training.augment import mix_batch

    x, y = _mix_inputs()
    out, t, lam = mix_batch(x, y, 0.0, 0.0, torch.Generator().manual_seed(1))
    assert lam == 1.0 and out is x and t is y


def test_mixup_blends_images_and_labels_with_one_weight():
    from model.training.augment import mix_batch

    x, y = _mix_inputs()
    out, t, lam = mix_batch(x, y, mixup_alpha=0.4, generator=torch.Generator().manual_seed(3))
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(t, lam * y + (1 - lam) * y.flip(0))
    torch.testing.assert_close(t.sum(1), torch.ones(len(y)))


def test_cutmix_pastes_one_box_and_labels_follow_its_area():
    from model.training.augment import mix_batch

    x, y = _mix_inputs()
    for seed in range(8):
        out, t, lam = mix_batch(x, y, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed))
        from_other = (out != x).any(dim=1)  # pixels taken from the reversed batch, per image
        pasted = from_other[0]
        assert torch.equal(out[0][:, pasted], x.flip(0)[0][:, pasted])
        assert torch.equal(out[0][:, ~pasted], x[0][:, ~pasted])
        ys, xs = torch.nonzero(pasted, as_tuple=True)
        if len(ys):  # one axis-aligned box, the same for every image of the batch
            assert pasted.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            assert torch.equal(from_other[1], pasted)
        assert lam == pytest.approx(1 - pasted.float().mean().item(), abs=1e-6)
        torch.testing.assert_close(t, lam * y + (1 - lam) * y.flip(0))


def test_mix_batch_is_reproducible_and_uses_both_methods():
    from model.training.augment import mix_batch

    x, y = _mix_inputs()
    a = mix_batch(x, y, 0.2, 1.0, torch.Generator().manual_seed(7))
    b = mix_batch(x, y, 0.2, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    kinds = set()
    for seed in range(20):
        out, _, lam = mix_batch(x, y, 0.2, 1.0, torch.Generator().manual_seed(seed))
        blended = torch.allclose(out, lam * x + (1 - lam) * x.flip(0))
        kinds.add("mixup" if blended and 0 < lam < 1 else "cutmix")
    assert kinds == {"mixup", "cutmix"}
