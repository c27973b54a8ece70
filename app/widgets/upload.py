"""Where the Analyse page's image comes from: an upload, the camera, a bundled example or a row
handed over from Batch review. Bytes stay in memory; nothing is written to disk."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.widgets.components import md_escape
from app.resources import classifier_digest, example_bytes, load_examples
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


def measured(r: dict, digest: str | None) -> dict | None:
    """The example's gate result from `python -m tools.examples`, if measured on these weights."""
    gate = r.get("gate")
    return gate if isinstance(gate, dict) and digest and gate.get("weights_sha256") == digest else None


def typical(r: dict, digest: str | None) -> bool:
    """The gate passes, the model answers correctly and confidently, and it never trained on the image."""
    gate = measured(r, digest)
    return bool(gate and gate.get("passed") and gate.get("correct") and not gate.get("low_confidence")
                and r.get("split") != "train")


def example_order(examples: list[dict], digest: str | None) -> list[int]:
    """Indices of `examples`, typical cases first (most confident first), as measured by the gate run
    of tools/examples.py on these weights; otherwise the file's order. The first is the default."""
    def key(i: int):
        gate = measured(examples[i], digest) or {}
        return (not typical(examples[i], digest), -float(gate.get("top_probability") or 0), i)
    return sorted(range(len(examples)), key=key)


def example_label(r: dict, digest: str | None) -> str:
    """Image id, what the example shows (from the gate run; not its diagnosis), and the patient facts."""
    who = ", ".join(str(v) for v in (r.get("localization"), r.get("sex"),
                                     f"{r['age']:.0f} y" if isinstance(r.get("age"), (int, float)) else None) if v)
    what = r.get("shows") if measured(r, digest) else "not yet run through this model's quality gate"
    return " · ".join(str(x) for x in (r.get("image_id", r["file"]), what, who) if x)


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
        digest = classifier_digest()
        i = st.selectbox("Example image (diagnosis shown after the analysis)", example_order(examples, digest),
                         format_func=lambda k: example_label(examples[k], digest), key="example",
                         help="Each example says what it shows, as measured by running the model and its quality "
                              "gate on it (`python -m tools.examples`). The first is a typical case.")
        return Source(examples[i]["file"], example_bytes(examples[i]), examples[i])
    if st.toggle("Use the camera instead", key="camera_on",
                 help="Take a photo with this device's camera (e.g. a phone with a dermatoscope adapter)."):
        shot = st.camera_input("Take a photo", key="camera")
        return Source("camera photo", shot.getvalue()) if shot is not None else None
    up = st.file_uploader("Dermoscopic image (JPEG, PNG, BMP, TIFF or WebP)", type=UPLOAD_TYPES, key="upload",
                          help="The image is analysed in memory and never stored.")
    return uploaded(up.name, up.getvalue()) if up is not None else None
