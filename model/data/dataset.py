"""HAM10000 in the layouts people have, lesion-disjoint splits, and in-memory decoding.

Layouts read by `load_dataset(root)`:
  (a) `images/`, `masks/`, `metadata.csv` (this project's copy of HAM10000);
  (b) the original release: `HAM10000_images_part_1/`, `HAM10000_images_part_2/`,
      `HAM10000_metadata.csv`, optional `HAM10000_segmentations_lesion_tschandl/`;
  (c) ISIC 2018 Task 3: a one-hot `*GroundTruth.csv` (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC),
      images beside it, optional `*LesionGroupings.csv` with lesion ids.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from model.labels import HAM10000_CLASSES
from model.data.checklist import CRITERIA_COLUMNS
from model.data.domain import to_training_domain
from model.data.preprocess import ImageError, decode_image, read_mask, resize_mask, resize_rgb
from model.data.tables import DatasetError, lesion_groups, metadata_rows, one_hot_rows, read_table_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Record:
    image_id: str
    label: str
    lesion_id: str
    image_path: Path | None
    mask_path: Path | None = None
    part: str = ""                   # an external set's own split (Derm7pt: "select" or "report")
    criteria: tuple[tuple[str, str], ...] = ()   # Derm7pt's 7-point criteria as scored: (column, value)


@dataclass
class Dataset:
    root: Path
    layout: str
    records: list[Record]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)

    @property
    def classes(self) -> tuple[str, ...]:
        present = {r.label for r in self.records}
        known = [c for c in HAM10000_CLASSES if c in present]
        return tuple(known + sorted(present - set(known)))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.label for r in self.records).items()))


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (any depth), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _index_files(folders: Iterable[Path], suffix: str = "") -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(suffix):
                index.setdefault(p.stem[: len(p.stem) - len(suffix)] if suffix else p.stem, p)
    return index


def _records_from_metadata(root: Path, meta_csv: Path, image_dirs: Sequence[Path],
                           mask_dirs: Sequence[Path], layout: str) -> Dataset:
    images = _index_files(image_dirs)
    masks = _index_files(mask_dirs, "_segmentation")
    records, problems = [], []
    for _, image_id, dx, lesion_id in metadata_rows(read_table_file(meta_csv)):
        path = images.get(image_id)
        if path is None:
            problems.append((image_id, "image file missing"))
            continue
        records.append(Record(image_id, dx, lesion_id, path, masks.get(image_id)))
    return Dataset(root, layout, records, problems)


def _records_with_parts(root: Path, table) -> Dataset:
    """An external set split into parts (Derm7pt's metadata.csv: image_id, dx, part, and any of the
    7-point criteria columns, kept on each record): a row with no HAM10000 class (empty dx) is
    skipped and reported."""
    images = _index_files([root / "images"])
    masks = _index_files([root / "masks"], "_segmentation")
    records, problems = [], []
    for line, row in table.rows:
        image_id, dx, part = row.get("image_id", ""), row.get("dx", "").strip().lower(), row.get("part", "").strip()
        if not dx:
            problems.append((image_id, "no HAM10000 class (dx empty)"))
        elif image_id not in images:
            problems.append((image_id, "image file missing"))
        else:
            criteria = tuple((c, row.get(c, "").strip().lower()) for c in CRITERIA_COLUMNS if c in table.columns)
            records.append(Record(image_id, dx, image_id, images[image_id], masks.get(image_id), part, criteria))
    return Dataset(root, "images+metadata with parts", records, problems)


def _records_from_groundtruth(root: Path, gt_csv: Path) -> Dataset:
    labels = {image: label for _, image, label in one_hot_rows(read_table_file(gt_csv))}
    lesions: dict[str, str] = {}
    for grouping in sorted(root.glob("*LesionGroupings*.csv")):
        lesions.update(lesion_groups(read_table_file(grouping)))
    image_dirs = [root, root / "images"] + [d for d in root.iterdir() if d.is_dir() and "Input" in d.name]
    mask_dirs = [root / "masks"] + [d for d in root.iterdir() if d.is_dir() and "segment" in d.name.lower()]
    images = _index_files(image_dirs)
    masks = _index_files(mask_dirs, "_segmentation")
    records, problems = [], []
    for image_id, label in labels.items():
        if image_id not in images:
            problems.append((image_id, "image file missing"))
            continue
        records.append(Record(image_id, label, lesions.get(image_id, image_id), images[image_id],
                              masks.get(image_id)))
    if not lesions:
        problems.append(("*", "no LesionGroupings file: each image is treated as its own lesion"))
    return Dataset(root, "isic2018-groundtruth", records, problems)


def load_dataset(root: str | Path) -> Dataset:
    """Find and read a HAM10000-style dataset under `root` (see module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Data folder not found: {root}")
    if (root / "metadata.csv").is_file() and (root / "images").is_dir():
        table = read_table_file(root / "metadata.csv")
        if "part" in table.columns:
            return _records_with_parts(root, table)
        return _records_from_metadata(root, root / "metadata.csv", [root / "images"],
                                      [root / "masks"], "images+masks+metadata")
    if (root / "HAM10000_metadata.csv").is_file() or (root / "HAM10000_metadata").is_file():
        meta = root / "HAM10000_metadata.csv"
        meta = meta if meta.is_file() else root / "HAM10000_metadata"
        parts = sorted(root.glob("HAM10000_images_part_*")) or [root / "images"]
        masks = sorted(root.glob("HAM10000_segmentations_lesion_tschandl*"))
        masks = [m / m.name if (m / m.name).is_dir() else m for m in masks]
        return _records_from_metadata(root, meta, parts, masks, "ham10000-original")
    gts = sorted(root.glob("*GroundTruth*.csv"))
    if gts:
        return _records_from_groundtruth(root, gts[0])
    raise DatasetError(
        f"No dataset found in {root}. Expected images/ + metadata.csv, the original "
        "HAM10000 release (HAM10000_images_part_1/2 + HAM10000_metadata.csv), or an ISIC 2018 "
        "Task 3 GroundTruth.csv beside its images.")


# ----------------------------------------------------------------------------- splits
def split_records(records: Sequence[Record], seed: int = 0, val_frac: float = 0.15,
                  test_frac: float = 0.15) -> dict[str, list[str]]:
    """Lesion-disjoint split, stratified by class: all images of a lesion land on one side.

    Per class, lesions are shuffled with `seed` and dealt to test, then val, until each holds
    its fraction of that class's images; the rest train.
    """
    by_lesion: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_lesion[r.lesion_id].append(r)
    by_class: dict[str, list[str]] = defaultdict(list)
    for lesion, recs in sorted(by_lesion.items()):
        label = Counter(r.label for r in recs).most_common(1)[0][0]
        by_class[label].append(lesion)
    rng = random.Random(seed)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
        lesions = by_class[label]
        rng.shuffle(lesions)
        total = sum(len(by_lesion[les]) for les in lesions)
        quota = {"test": test_frac * total, "val": val_frac * total}
        filled = {"test": 0, "val": 0}
        for lesion in lesions:
            n = len(by_lesion[lesion])
            side = next((s for s in ("test", "val") if filled[s] + n / 2 <= quota[s]), "train")
            if side != "train":
                filled[side] += n
            splits[side].extend(r.image_id for r in by_lesion[lesion])
    return {k: sorted(v) for k, v in splits.items()}


def split_hash(splits: dict[str, list[str]]) -> str:
    canon = json.dumps({k: sorted(v) for k, v in sorted(splits.items())}, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def write_split(path: str | Path, splits: dict[str, list[str]], **info) -> str:
    h = split_hash(splits)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"hash": h, **info, "splits": splits}, indent=1))
    return h


def read_split(path: str | Path) -> tuple[dict[str, list[str]], str]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        splits = {str(k): [str(i) for i in v] for k, v in doc["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"Split file {path} is not a split written by train.py ({type(e).__name__}: "
                           f"{str(e)[:120]}). Point --split at a bundle's split.json.") from None
    h = split_hash(splits)
    if isinstance(doc, dict) and doc.get("hash") and doc["hash"] != h:
        raise DatasetError(f"Split file {path} was edited: its hash no longer matches its content.")
    return splits, h


def select(records: Sequence[Record], ids: Iterable[str]) -> list[Record]:
    wanted = set(ids)
    return [r for r in records if r.image_id in wanted]


# ----------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """A dataset decoded once into memory: uint8 images (Nx3xHxW), optional masks (Nx1xHxW)."""
    images: "object"
    labels: np.ndarray
    masks: "object | None"
    records: list[Record]
    skipped: list[tuple[str, str]]


def decode_record(rec: Record, size_hw=None, with_mask: bool = False, domain=None):
    """(record, image, mask, error) for one record: the image through the one input path and resized
    to `size_hw` (None: as stored), the mask resized alike; an unreadable file gives its error."""
    try:
        img = decode_image(rec.image_path)
        if size_hw is not None:
            img = resize_rgb(to_training_domain(img, domain), size_hw)
        mask = None
        if with_mask:
            if rec.mask_path is None:
                return rec, None, None, "mask missing"
            mask = read_mask(rec.mask_path)
            if size_hw is not None:
                mask = resize_mask(mask, size_hw)
        return rec, img, mask, None
    except (ImageError, OSError, ValueError) as e:
        return rec, None, None, str(e).splitlines()[0][:200]


def decode_many(records: Sequence[Record], size_hw=None, with_masks: bool = False, domain=None,
                workers: int = 4) -> Iterator[tuple]:
    """decode_record over many records on a thread pool, in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda r: decode_record(r, size_hw, with_masks, domain), records)


def decode_records(records: Sequence[Record], size_hw: Sequence[int], classes: Sequence[str],
                   with_masks: bool = False, workers: int = 4,
                   progress: Callable[[int, int], None] | None = None, domain=None) -> Decoded:
    """Decode every record once through the one input path (model.data.domain, `domain` settings) and
    resize it to the network's input; unreadable or truncated files are skipped and reported."""
    import torch

    index = {c: i for i, c in enumerate(classes)}
    imgs, masks, labels, kept, skipped = [], [], [], [], []
    for i, (rec, img, mask, err) in enumerate(decode_many(records, size_hw, with_masks, domain, workers)):
        if progress:
            progress(i + 1, len(records))
        if err is not None:
            skipped.append((rec.image_id, err))
            continue
        if rec.label not in index:
            skipped.append((rec.image_id, f"label {rec.label!r} is not one of the model's classes"))
            continue
        imgs.append(img)
        masks.append(mask)
        labels.append(index[rec.label])
        kept.append(rec)
    h, w = int(size_hw[0]), int(size_hw[1])
    images = (torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous() if imgs
              else torch.zeros(0, 3, h, w, dtype=torch.uint8))
    mask_t = None
    if with_masks:
        mask_t = (torch.from_numpy(np.stack(masks)[:, None].astype(np.uint8)) if masks
                  else torch.zeros(0, 1, h, w, dtype=torch.uint8))
    return Decoded(images, np.asarray(labels, dtype=np.int64), mask_t, kept, skipped)


def has_parts(data: Path | Dataset) -> bool:
    """Whether a dataset (or its folder) is an external set split into its own parts (Derm7pt's `part` column)."""
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    return any(r.part for r in ds.records)


def records_for_split(bundle_dir: Path, data: Path | Dataset, split: str) -> list[Record]:
    """The records of a split: the bundle's split.json names them; an external set's own parts
    (`select`, `report`) name theirs; `all` is every image of the folder. `data`: the folder, or the
    dataset already read from it."""
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    data = ds.root
    if split == "all":
        return ds.records
    parts = {r.part for r in ds.records if r.part}
    if parts:
        if split not in parts:
            raise DatasetError(f"{data} is an external set split into {', '.join(sorted(parts))}: use --split "
                               f"{'report' if 'report' in parts else sorted(parts)[0]} (or all).")
        return [r for r in ds.records if r.part == split]
    if split in ("select", "report"):
        raise DatasetError(f"{data} has no parts (no `part` column): use --split test, val, train or all.")
    split_file = bundle_dir / "split.json"
    if not split_file.is_file():
        raise DatasetError(f"{split_file} not found: the bundle does not say which images were held out. "
                           "Use --split all to score every image of the folder.")
    splits, _ = read_split(split_file)
    chosen = select(ds.records, splits[split])
    if not chosen:
        raise DatasetError(f"None of the {split} split's images are in {data}.")
    return chosen
