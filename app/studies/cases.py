"""A new study's cases from uploads (images, .zip), the bundled examples and a labels file, and
each case's image bytes again at read time. No Streamlit; images are only opened by PIL here to
make the thumbnail (so an unreadable file is skipped at creation, with its reason)."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageOps

from app.widgets.tables import gather, stem
from review.store import CaseIn

THUMB_SIDE = 160


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def thumbnail(data: bytes) -> bytes:
    """A small PNG of an image file; raises ValueError when it is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            small = ImageOps.exif_transpose(im).convert("RGB")
            small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__})") from None
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    return buf.getvalue()


def build_cases(uploads: Sequence[tuple[str, bytes]], examples: Sequence[tuple[dict, bytes]],
                labels: dict[str, str] | None, classes: Sequence[str]) -> tuple[list[CaseIn], list[tuple[str, str]]]:
    """Cases (examples first, then uploads in order; one case per distinct image) and what was
    skipped (name, reason). Truth: the labels file by file name without extension, else an
    example's own diagnosis; labels that are not classes of the model are dropped."""
    cases, skipped, seen = [], [], set()
    items = gather(list(uploads))
    skipped += items.skipped
    entries = [(str(r.get("file")), data, f"example:{r.get('file')}", r.get("dx")) for r, data in examples]
    entries += [(name, data, "upload", None) for name, data in items.images]
    for name, data, source, dx in entries:
        digest = sha256(data)
        if digest in seen:
            skipped.append((name, "the same image is already in the study"))
            continue
        try:
            thumb = thumbnail(data)
        except ValueError as e:
            skipped.append((name, str(e)))
            continue
        truth = (labels or {}).get(stem(name), dx)
        truth = str(truth).lower() if truth is not None else None
        if truth is not None and truth not in classes:
            skipped.append((name, f"label {truth!r} is not a class of this model (kept without a label)"))
            truth = None
        seen.add(digest)
        cases.append(CaseIn(name, digest, source, truth, thumb, data))
    return cases, skipped


def case_bytes(case: dict, stored: bytes | None, examples_dir: Path, supplied: dict[str, bytes]) -> bytes | None:
    """The case's image: stored bytes, the bundled example it came from, or a file the reader
    supplied in this session, each only if its sha256 matches the case's."""
    candidates = [stored]
    source = str(case.get("source") or "")
    if source.startswith("example:"):
        path = (examples_dir / source.split(":", 1)[1]).resolve()
        if path.parent == examples_dir.resolve() and path.is_file():
            candidates.append(path.read_bytes())
    candidates.append(supplied.get(case["image_sha256"]))
    return next((c for c in candidates if c is not None and sha256(c) == case["image_sha256"]), None)
