"""Helpers shared by the app tests: the models folder, an AppTest factory and odd image files.

Imported by the test modules (`from app_fixtures import ...`); the tiny bundles come from
conftest's `tiny_models_dir` fixture.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
FULLRES = sorted((REPO / "tests" / "data" / "fullres" / "images").glob("*.jpg"))
SMALL = REPO / "tests" / "data" / "ham_small"
TIMEOUT = 180  # the first run imports torch and loads the model


@pytest.fixture(scope="session")
def app_models_dir(request) -> Path:
    """conftest's tiny bundles (classifier/ + segmenter/); $DERMO_TEST_MODELS_DIR as a fallback."""
    try:
        return Path(request.getfixturevalue("tiny_models_dir"))
    except pytest.FixtureLookupError:
        if os.environ.get("DERMO_TEST_MODELS_DIR"):
            return Path(os.environ["DERMO_TEST_MODELS_DIR"])
        pytest.skip("needs the tiny_models_dir fixture from tests/conftest.py")


@pytest.fixture
def make_app(app_models_dir, monkeypatch):
    """AppTest of app/main.py on the tiny bundles (or on `models`), already run once."""
    from streamlit.testing.v1 import AppTest

    def make(models: Path | None = None, page: str | None = None):
        monkeypatch.setenv("DERMO_MODELS_DIR", str(models or app_models_dir))
        at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
        at.run()
        if page:
            at.switch_page(page).run()
        return at
    return make


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at) -> str:
    """All visible text of the main area and sidebar, joined (for 'is this shown' checks)."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "header", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts).replace("\\", "")


def card_tab(at, label: str):
    """Open the Model card's tab `label` (a tab's sections run only while it is open) and return `at`."""
    at.session_state["card_tab"] = label
    at.run()
    no_exception(at)
    return at


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def odd_files() -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes) for the awkward uploads the Analyse page must survive."""
    rgb = np.asarray(Image.open(FULLRES[0]).convert("RGB").resize((300, 200)))
    photo = Image.fromarray(rgb)
    jpeg = FULLRES[0].read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    gray16 = Image.fromarray((np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype(np.uint16))
    return {
        "empty": ("empty.jpg", b""),
        "text": ("notes.jpg", b"this is a text file, not an image\n" * 20),
        "truncated": ("cut.jpg", jpeg[: len(jpeg) // 3]),
        "huge": ("huge.png", _encode(Image.new("1", (8000, 7000)), "PNG")),
        "one_pixel": ("dot.png", _encode(Image.new("RGB", (1, 1), (120, 80, 60)), "PNG")),
        "16bit": ("deep.png", _encode(gray16, "PNG")),
        "cmyk": ("print.jpg", _encode(photo.convert("CMYK"), "JPEG")),
        "rgba": ("alpha.png", _encode(photo.convert("RGBA"), "PNG")),
        "grayscale": ("gray.jpg", _encode(photo.convert("L"), "JPEG")),
        "exif_rotated": ("rotated.jpg", _encode(photo, "JPEG", exif=exif)),
    }


@pytest.fixture
def fake_segmenter(monkeypatch):
    """Make the segmenter return a known mask ('ellipse' or 'empty'): the tiny test segmenter's
    masks are arbitrary. Clears the app's result cache around the test."""
    import streamlit as st
    from model.inference.pipeline import Analyzer

    def use(kind: str = "ellipse"):
        def segment(self, rgb):
            h, w = rgb.shape[:2]
            if kind == "empty":
                return np.zeros((h, w), bool)
            yy, xx = np.ogrid[:h, :w]
            return ((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1
        monkeypatch.setattr(Analyzer, "_segment", segment)
    st.cache_data.clear()
    yield use
    st.cache_data.clear()


def page_text(at) -> str:
    """Every string the rendered page holds, read from the whole element tree (sidebar included):
    each element's full message (markdown, captions, image captions, chart specs, tables, help
    texts), but for choice widgets only their label and current value, not the options they offer."""
    from google.protobuf.text_format import MessageToString
    from streamlit.testing.v1.element_tree import Block

    def message(node) -> str:
        proto = getattr(node, "proto", None)
        return MessageToString(proto, as_utf8=True) if hasattr(proto, "ListFields") else str(proto or "")

    choice = {"selectbox", "multiselect", "radio", "select_slider"}
    out = []

    def walk(node):
        if isinstance(node, Block):
            out.append(message(node))
            for child in node.children.values():
                walk(child)
        elif getattr(node, "type", "") in choice:
            out.append(f"{node.label} {node.value}")
        else:
            out.append(message(node))
    walk(at._tree)
    return "\n".join(out).replace("\\", "")
