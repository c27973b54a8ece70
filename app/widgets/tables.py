"""Batch review without Streamlit: gather uploads (images and .zip archives) into named items,
tabulate predictions, and score them against a labels table."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from model.data.archive import ArchiveError, read_image_archive
from model.data.checklist import CRITERIA
from model.files import clean_name, printable
from model.labels import display_name
from model.metrics import classification_report
from model.inference.results import BatchPrediction


@dataclass
class Items:
    """Images to classify (unique display name, bytes), what was skipped (name, reason), archives
    refused as a whole (name, reason), and the original of every name that had to be cleaned
    (bidirectional or control characters: model.files.clean_name)."""
    images: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    originals: dict[str, str] = field(default_factory=dict)

    def add(self, raw: str, data: bytes, seen: set[str]) -> None:
        shown = _unique(clean_name(raw), seen)
        if shown != raw:
            self.originals[shown] = printable(raw)   # escaped: "\u202e", never the override itself
        self.images.append((shown, data))


def _unique(name: str, seen: set[str]) -> str:
    out, k = name, 2
    while out in seen:
        out = f"{name} ({k})"
        k += 1
    seen.add(out)
    return out


def gather(uploads: Sequence[tuple[str, bytes]]) -> Items:
    """Expand .zip uploads in memory (model.data.archive's limits apply) next to single images."""
    items, seen = Items(), set()
    for name, data in uploads:
        if name.lower().endswith(".zip"):
            try:
                images, skipped = read_image_archive(data)
            except ArchiveError as e:
                items.refused.append((clean_name(name), str(e)))
                continue
            for n, b in images:
                items.add(n, b, seen)
            items.skipped += [(clean_name(f"{name}: {n}"), why) for n, why in skipped]
        else:
            items.add(name, data, seen)
    return items


CHUNK = 16                 # images per call to the classifier at most ...
CHUNK_BYTES = 2 * 2**20    # ... and at most this many bytes of files, so large images move the bar too


def chunks(images: Sequence[tuple[str, bytes]], size: int = CHUNK, max_bytes: int = CHUNK_BYTES):
    """Consecutive slices of `images` with at most `size` items and (beyond their first item)
    at most `max_bytes` of file data."""
    start = 0
    while start < len(images):
        end, total = start + 1, len(images[start][1])
        while end < len(images) and end - start < size and total + len(images[end][1]) <= max_bytes:
            total += len(images[end][1])
            end += 1
        yield images[start:end]
        start = end


def classify_items(analyzer: Any, images: Sequence[tuple[str, bytes]], tta: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> list[BatchPrediction]:
    """Analyzer.classify_many over (name, bytes) pairs, a chunk at a time, calling
    progress(done, total) after each chunk. Beyond the chunk, one image is decoded at a time."""
    preds: list[BatchPrediction] = []
    for part in chunks(images):
        preds += analyzer.classify_many(part, tta=tta, batch_size=CHUNK)
        if progress is not None:
            progress(len(preds), len(images))
    return preds


GATED = "gated: answer withheld"


def results_frame(preds: Sequence[BatchPrediction], classes: Sequence[str],
                  originals: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per image: the sortable review table (the 7-point score and each criterion's estimated
    presence from the concept probes, then probabilities per class at the end). An image
    the gate stops shows as gated, without its top class; `gated` says which rows those are;
    `original name` holds the file name as uploaded when it had to be cleaned."""
    rows = []
    for p in preds:
        row = {"file": p.name,
               "top class": (GATED if p.gated else display_name(p.top_class)) if p.top_class else "unreadable",
               "gated": "yes" if p.gated else "",
               "probability": p.top_probability,
               "malignant probability": p.malignant_probability,
               "melanoma flag": {True: "FLAG", False: ""}.get(p.melanoma_flag, "n/a"),
               "entropy": p.entropy,
               "flags": ", ".join(p.flags) + (f": {p.error}" if p.error else ""),
               "notes": " ".join(p.notes)}
        row["7-point score"] = p.seven_point_score
        for c in CRITERIA:   # estimated presence of each criterion (concept probes; None without them)
            row[c.label] = None if p.concepts is None else p.concepts.get(c.name)
        for i, c in enumerate(classes):
            row[f"p_{c}"] = None if p.probabilities is None else float(p.probabilities[i])
        if originals:
            row["original name"] = originals.get(p.name, "")
        rows.append(row)
    return pd.DataFrame(rows)


def stem(name: str) -> str:
    """File stem used to match labels: 'x/ISIC_0024306.jpg (2)' -> 'ISIC_0024306'."""
    base = name.rsplit(" (", 1)[0] if name.endswith(")") else name
    return PurePath(base.replace("\\", "/")).stem


@dataclass
class Scored:
    report: dict | None
    matched: int
    unmatched: list[str]           # images without a label
    unknown_labels: list[str]      # labels the model does not know


def score(preds: Sequence[BatchPrediction], labels: dict[str, str], classes: Sequence[str]) -> Scored:
    """classification_report over the images whose stem is in `labels` (and readable)."""
    y, probs, unmatched, unknown = [], [], [], []
    index = {c: i for i, c in enumerate(classes)}
    for p in preds:
        if p.probabilities is None:
            continue
        label = labels.get(stem(p.name))
        if label is None:
            unmatched.append(p.name)
        elif label not in index:
            unknown.append(f"{p.name}: {label}")
        else:
            y.append(index[label])
            probs.append(p.probabilities)
    report = classification_report(y, np.stack(probs), classes) if y else None
    return Scored(report, len(y), unmatched, unknown)

