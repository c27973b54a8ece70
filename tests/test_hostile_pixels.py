"""Hostile pixel values and shapes: every mode that becomes RGB (high bit depth, float, palettes,
alpha, CMYK, gray saved as colour), non-finite values, extreme aspect ratios. The gate judges
colour from the pixels, non-finite values are masked or refused (never cast), and size warnings
quote the uploaded size."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from model.data.pixels import is_grayscale
from model.data.preprocess import ImageError, decode_image, decode_with_size

RAMP = np.linspace(0, 1, 96 * 128, dtype=np.float32).reshape(96, 128)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gray_palette() -> Image.Image:
    im = Image.fromarray((RAMP * 255).astype(np.uint8), "L").convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    return im


# name -> file bytes of gray pixels in a mode that is not plain 8-bit gray
GRAY_FILES = {
    "16-bit PNG": lambda: _encode(Image.fromarray((RAMP * 65535).astype(np.uint16)), "PNG"),
    "12-bit values in a 16-bit PNG": lambda: _encode(Image.fromarray((RAMP * 4095).astype(np.uint16)), "PNG"),
    "16-bit TIFF": lambda: _encode(Image.fromarray((RAMP * 65535).astype(np.uint16)), "TIFF"),
    "32-bit integer TIFF": lambda: _encode(Image.fromarray((RAMP * 2**20).astype(np.int32)), "TIFF"),
    "float TIFF 0..1": lambda: _encode(Image.fromarray(RAMP), "TIFF"),
    "float TIFF with negatives": lambda: _encode(Image.fromarray(RAMP * 8 - 3), "TIFF"),
    "8-bit gray": lambda: _encode(Image.fromarray((RAMP * 255).astype(np.uint8), "L"), "PNG"),
    "1-bit": lambda: _encode(Image.fromarray(RAMP > 0.5).convert("1"), "PNG"),
    "gray with alpha": lambda: _encode(Image.fromarray((RAMP * 255).astype(np.uint8), "L").convert("LA"), "PNG"),
    "gray palette": lambda: _encode(_gray_palette(), "PNG"),
    "gray pixels in an RGB JPEG": lambda: _encode(Image.fromarray((RAMP * 255).astype(np.uint8)).convert("RGB"),
                                                  "JPEG", quality=80),
    "gray pixels in a CMYK JPEG": lambda: _encode(Image.fromarray((RAMP * 255).astype(np.uint8)).convert("RGB")
                                                  .convert("CMYK"), "JPEG", quality=90),
}


def _colour_photo() -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.stack([RAMP * 120 + 100, RAMP * 60 + 60, RAMP * 40 + 40], axis=2)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


COLOUR_FILES = {
    "RGB JPEG": lambda: _encode(_colour_photo(), "JPEG", quality=85),
    "colour palette": lambda: _encode(_colour_photo().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "RGBA": lambda: _encode(_colour_photo().convert("RGBA"), "PNG"),
    "CMYK JPEG": lambda: _encode(_colour_photo().convert("CMYK"), "JPEG", quality=90),
}


@pytest.fixture(scope="module")
def analyzer(tiny_models_dir):
    from model.inference.pipeline import Analyzer

    return Analyzer.from_dir(tiny_models_dir, "cpu")


# ----------------------------------------------------------------------------- grayscale from the pixels
@pytest.mark.parametrize("case", list(GRAY_FILES))
def test_any_mode_of_gray_pixels_is_flagged_grayscale(case, analyzer):
    data = GRAY_FILES[case]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no invalid casts
        rgb = decode_image(data)
    assert is_grayscale(rgb), case
    pred = analyzer.classify_many([(case, data)])[0]
    assert pred.error is None and "grayscale" in pred.flags, (case, pred.flags)
    a = analyzer.analyze(data, cam_methods=("gradcam",))
    assert any(w.startswith("Grayscale image") for w in a.quality_warnings), (case, a.quality_warnings)


@pytest.mark.parametrize("case", list(COLOUR_FILES))
def test_colour_images_are_not_flagged_grayscale(case, analyzer):
    data = COLOUR_FILES[case]()
    assert not is_grayscale(decode_image(data))
    assert "grayscale" not in analyzer.classify_many([(case, data)])[0].flags


def test_sixteen_bit_and_eight_bit_copies_get_the_same_gate(analyzer):
    """The tester's case: the same gray pixels at 16 and at 8 bits are both flagged."""
    eight = GRAY_FILES["8-bit gray"]()
    sixteen = GRAY_FILES["16-bit PNG"]()
    flags = [p.flags for p in analyzer.classify_many([("8.png", eight), ("16.png", sixteen)])]
    assert "grayscale" in flags[0] and "grayscale" in flags[1]
    assert np.abs(decode_image(eight).astype(int) - decode_image(sixteen).astype(int)).max() <= 1


def test_a_little_colour_is_not_gray_and_jpeg_noise_is():
    rgb = np.full((100, 100, 3), 128, np.uint8)
    rgb[..., 0] += np.random.default_rng(0).integers(0, 3, (100, 100)).astype(np.uint8)  # rounding noise
    assert is_grayscale(rgb)
    rgb[:20, :20] = (200, 60, 40)                                                         # 4% coloured
    assert not is_grayscale(rgb)


# ----------------------------------------------------------------------------- non-finite values
def _float_tiff(arr: np.ndarray) -> bytes:
    return _encode(Image.fromarray(arr.astype(np.float32)), "TIFF")


def _with(value: float, share: float) -> np.ndarray:
    arr = RAMP.copy()
    idx = np.random.default_rng(1).choice(arr.size, int(arr.size * share), replace=False)
    arr.flat[idx] = value
    return arr


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_few_non_finite_pixels_are_masked_not_cast(value, analyzer):
    """The tester's case: 0.6% NaN in a float TIFF decoded to an all-black image."""
    arr = _with(value, 0.006)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rgb = decode_image(_float_tiff(arr), notes)
    finite = np.isfinite(arr)
    clean = decode_image(_float_tiff(np.where(finite, arr, 0)))
    assert (rgb[finite] == clean[finite]).all()                 # the rest scaled on the finite values
    assert (rgb[~finite] == 0).all() and rgb.max() >= 250
    assert any("NaN or infinite" in n and "0.6%" in n for n in notes), notes
    pred = analyzer.classify_many([("nan.tif", _float_tiff(arr))])[0]
    assert pred.error is None and any("NaN or infinite" in n for n in pred.notes)


@pytest.mark.parametrize("arr,words", [(np.full((40, 40), np.nan), "Every pixel"),
                                       (_with(np.nan, 0.2), "20% of the pixels")], ids=["all NaN", "20% NaN"])
def test_mostly_non_finite_images_are_refused(arr, words, analyzer):
    with pytest.raises(ImageError, match=words):
        decode_image(_float_tiff(arr))
    pred = analyzer.classify_many([("bad.tif", _float_tiff(arr))])[0]
    assert pred.probabilities is None and words in pred.error


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_fuzz_float_images_decode_or_refuse(arr):
    data = _float_tiff(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            rgb = decode_image(data)
        except ImageError as e:
            assert "NaN or infinite" in str(e)
            return
    assert rgb.dtype == np.uint8 and rgb.shape == (*arr.shape, 3)


# ----------------------------------------------------------------------------- shapes and sizes
@pytest.mark.parametrize("w,h", [(10000, 50), (50, 10000), (10000, 1), (3000, 40)])
def test_extreme_aspect_ratios_report_the_uploaded_size(w, h, analyzer):
    data = _encode(Image.new("RGB", (w, h), (170, 110, 90)), "PNG")
    rgb, original = decode_with_size(data, max_side=1024)
    assert original == (h, w)
    a = analyzer.analyze(data, cam_methods=("gradcam",))
    assert max(a.image.shape[:2]) == 1024 and min(a.image.shape[:2]) >= 1
    tiny = [x for x in a.quality_warnings if "too small" in x]
    assert tiny and f"{w}x{h} pixels" in tiny[0], a.quality_warnings  # the size uploaded, not 1024x5
    assert "tiny image" in analyzer.classify_many([("thin.png", data)])[0].flags


def test_a_large_image_is_not_called_small(analyzer):
    data = _encode(Image.new("RGB", (6000, 400), (170, 110, 90)), "JPEG")  # works at 1024x68
    assert not [w for w in analyzer.analyze(data).quality_warnings if "too small" in w]
    assert "tiny image" not in analyzer.classify_many([("wide.jpg", data)])[0].flags


def test_a_png_text_chunk_bomb_is_named_for_what_it_is():
    """It was called "truncated or corrupt" and named a Pillow constant (issue 27.14)."""
    import io

    from PIL import Image, PngImagePlugin

    from model.data.preprocess import ImageError, decode_image

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * (20 * 1024 * 1024), zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PNG", pnginfo=info)
    with pytest.raises(ImageError) as e:
        decode_image(buf.getvalue())
    msg = str(e.value)
    assert "decompression bomb" in msg and "metadata" in msg
    assert "MAX_TEXT_CHUNK" not in msg and "corrupt" not in msg
