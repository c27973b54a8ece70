"""Where the Analyse page's image comes from: an upload, the camera, a bundled example or a row
handed over from Batch review. Bytes stay in memory; nothing is written to disk."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.widgets.components import md_escape
from app.resources import example_bytes, load_examples
from model.files import clean_name, printable

UPLOAD_TYPES = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"]
UPLOAD, EXAMPLE, FROM_BATCH = "Upload an image", "Use an example", "From batch review"
HANDOFF_KEY = "analyse_handoff"  # {"name": str, "data": bytes}, set by the Batch review page


@dataclass
class Source:
    name: str                     # as shown and written: bidirectional and control characters removed
    data: bytes
    example: dict | None = None   # examples.json record when it is a bundled example
    original: str | None = None   # the file name as uploaded, escaped, when it had to be cleaned


def uploaded(name: str, data: bytes) -> Source:
    shown = clean_name(name)
    return Source(shown, data, original=printable(name) if shown != name else None)


def hand_over(name: str, data: bytes) -> None:
    """Called by Batch review before st.switch_page: the Analyse page opens this image."""
    st.session_state[HANDOFF_KEY] = {"name": name, "data": data}


def _example_label(r: dict) -> str:
    bits = [str(r.get("image_id", r["file"]))]
    who = ", ".join(str(v) for v in (r.get("localization"), r.get("sex"),
                                     f"{r['age']:.0f} y" if isinstance(r.get("age"), (int, float)) else None) if v)
    return f"{bits[0]} · {who}" if who else bits[0]


def choose_source() -> Source | None:
    """Render the input widgets; the chosen image, or None when nothing is chosen yet."""
    handoff = st.session_state.get(HANDOFF_KEY)
    options = [UPLOAD, EXAMPLE] + ([FROM_BATCH] if handoff else [])
    mode = st.radio("Image source", options, index=len(options) - 1 if handoff else 0,
                    horizontal=True, key="source_mode" if not handoff else "source_mode_batch")
    if mode == FROM_BATCH and handoff:
        st.caption(f"Opened from Batch review: {md_escape(handoff['name'])}")
        return uploaded(handoff["name"], handoff["data"])
    if mode == EXAMPLE:
        examples = load_examples()
        if not examples:
            st.info("No example images are bundled (assets/examples/examples.json is missing).")
            return None
        i = st.selectbox("Example image (diagnosis shown after the analysis)", range(len(examples)),
                         format_func=lambda k: _example_label(examples[k]), key="example")
        return Source(examples[i]["file"], example_bytes(examples[i]), examples[i])
    if st.toggle("Use the camera instead", key="camera_on",
                 help="Take a photo with this device's camera (e.g. a phone with a dermatoscope adapter)."):
        shot = st.camera_input("Take a photo", key="camera")
        return Source("camera photo", shot.getvalue()) if shot is not None else None
    up = st.file_uploader("Dermoscopic image (JPEG, PNG, BMP, TIFF or WebP)", type=UPLOAD_TYPES, key="upload",
                          help="The image is analysed in memory and never stored.")
    return uploaded(up.name, up.getvalue()) if up is not None else None
