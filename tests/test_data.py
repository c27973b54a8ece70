"""Dataset layouts, problem reporting, masks and lesion-disjoint splits (model/data/dataset.py)."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data.dataset import (DatasetError, decode_records, load_dataset, read_split, select, split_hash,
                                split_records, write_split)
from model.data.tables import parse_labels_table
from model.labels import HAM10000_CLASSES
from model.data.preprocess import read_mask

ONE_HOT = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _metadata(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _labels(ds) -> dict[str, str]:
    return {r.image_id: r.label for r in ds.records}


# ----------------------------------------------------------------------------- layouts
def test_ham_small_layout(ham_small):
    ds = load_dataset(ham_small)
    assert ds.layout == "images+masks+metadata"
    assert ds.problems == []
    assert len(ds.records) == 42
    assert ds.counts() == {c: 6 for c in HAM10000_CLASSES}
    assert ds.classes == HAM10000_CLASSES
    rows = {r["image_id"]: r for r in _metadata(ham_small)}
    for rec in ds.records:
        assert rec.label == rows[rec.image_id]["dx"]
        assert rec.lesion_id == rows[rec.image_id]["lesion_id"]
        assert rec.image_path.is_file() and rec.image_path.stem == rec.image_id
        assert rec.mask_path is not None and rec.mask_path.name == f"{rec.image_id}_segmentation.png"
    # the fixture data really has multi-image lesions (what makes the split tests meaningful)
    per_lesion = Counter(r.lesion_id for r in ds.records)
    assert sum(1 for n in per_lesion.values() if n >= 2) >= 7
    assert max(per_lesion.values()) >= 3


def _make_original_release(src: Path, dst: Path, nested_masks: bool) -> Path:
    rows = _metadata(src)
    for i, name in enumerate(("HAM10000_images_part_1", "HAM10000_images_part_2")):
        (dst / name).mkdir(parents=True)
        for row in rows[i::2]:
            shutil.copy(src / "images" / f"{row['image_id']}.jpg", dst / name)
    masks = dst / "HAM10000_segmentations_lesion_tschandl"
    if nested_masks:  # how the zip unpacks: the folder inside a folder of the same name
        masks = masks / masks.name
    shutil.copytree(src / "masks", masks)
    shutil.copy(src / "metadata.csv", dst / "HAM10000_metadata.csv")
    return dst


@pytest.mark.parametrize("nested_masks", [False, True])
def test_original_release_layout(ham_small, tmp_path, nested_masks):
    root = _make_original_release(ham_small, tmp_path / "HAM10000", nested_masks)
    ds = load_dataset(root)
    assert ds.layout == "ham10000-original"
    assert ds.problems == []
    assert _labels(ds) == _labels(load_dataset(ham_small))
    assert {r.image_path.parent.name for r in ds.records} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert all(r.mask_path is not None for r in ds.records)
    ref = {r.image_id: r.lesion_id for r in load_dataset(ham_small).records}
    assert {r.image_id: r.lesion_id for r in ds.records} == ref


def _make_isic2018(src: Path, dst: Path, groupings: bool) -> Path:
    dst.mkdir(parents=True)
    rows = _metadata(src)
    with open(dst / "ISIC2018_Task3_Training_GroundTruth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *ONE_HOT])
        for row in rows:
            w.writerow([row["image_id"], *("1.0" if c.lower() == row["dx"] else "0.0" for c in ONE_HOT)])
            shutil.copy(src / "images" / f"{row['image_id']}.jpg", dst)
    if groupings:
        with open(dst / "ISIC2018_Task3_Training_LesionGroupings.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "lesion_id", "diagnosis_confirm_type"])
            for row in rows:
                w.writerow([row["image_id"], row["lesion_id"], row["dx_type"]])
    return dst


def test_isic2018_groundtruth_layout(ham_small, tmp_path):
    root = _make_isic2018(ham_small, tmp_path / "isic", groupings=True)
    ds = load_dataset(root)
    assert ds.layout == "isic2018-groundtruth"
    assert ds.problems == []
    reference = load_dataset(ham_small)
    assert _labels(ds) == _labels(reference)
    assert {r.image_id: r.lesion_id for r in ds.records} == {r.image_id: r.lesion_id for r in reference.records}


def test_isic2018_without_groupings_says_lesions_unknown(ham_small, tmp_path):
    ds = load_dataset(_make_isic2018(ham_small, tmp_path / "isic", groupings=False))
    assert _labels(ds) == _labels(load_dataset(ham_small))
    assert all(r.lesion_id == r.image_id for r in ds.records)
    assert any("LesionGroupings" in why for _, why in ds.problems)


def test_parse_labels_table_both_formats():
    meta = "lesion_id,image_id,dx\nL1,ISIC_1,MEL\nL2,ISIC_2,nv\n"
    assert parse_labels_table(meta) == {"ISIC_1": "mel", "ISIC_2": "nv"}
    onehot = "\ufeffimage,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,0,0,0,0,0,1.0,0\nISIC_2,0,0,0,0,0,0,1\n"
    assert parse_labels_table(onehot) == {"ISIC_1": "df", "ISIC_2": "vasc"}
    with pytest.raises(DatasetError, match="Unrecognised"):
        parse_labels_table("a,b\n1,2\n")
    with pytest.raises(DatasetError):
        parse_labels_table("")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No dataset found"):
        load_dataset(tmp_path / "empty")


# ----------------------------------------------------------------------------- broken files
@pytest.fixture
def damaged(ham_small, tmp_path):
    """A copy of ham_small with one missing, one unreadable, one truncated image and one missing mask."""
    root = tmp_path / "damaged"
    shutil.copytree(ham_small, root)
    ids = [r["image_id"] for r in _metadata(root)]
    missing, text, truncated, no_mask = ids[0], ids[7], ids[14], ids[21]
    (root / "images" / f"{missing}.jpg").unlink()
    (root / "images" / f"{text}.jpg").write_text("this is not a JPEG, just some text\n")
    data = (root / "images" / f"{truncated}.jpg").read_bytes()
    (root / "images" / f"{truncated}.jpg").write_bytes(data[: len(data) // 2])
    (root / "masks" / f"{no_mask}_segmentation.png").unlink()
    return root, dict(missing=missing, text=text, truncated=truncated, no_mask=no_mask)


def test_missing_unreadable_truncated_are_reported_and_skipped(damaged):
    root, bad = damaged
    ds = load_dataset(root)
    assert [i for i, _ in ds.problems] == [bad["missing"]]
    assert "missing" in ds.problems[0][1]
    assert len(ds.records) == 41
    dec = decode_records(ds.records, (32, 40), HAM10000_CLASSES, workers=2)
    skipped = dict(dec.skipped)
    assert set(skipped) == {bad["text"], bad["truncated"]}
    assert "not an image" in skipped[bad["text"]]
    assert "truncated" in skipped[bad["truncated"]] or "decoded" in skipped[bad["truncated"]]
    assert tuple(dec.images.shape) == (39, 3, 32, 40)
    assert len(dec.labels) == len(dec.records) == 39
    assert bad["text"] not in {r.image_id for r in dec.records}


def test_decode_with_masks_skips_missing_mask(damaged):
    root, bad = damaged
    ds = load_dataset(root)
    dec = decode_records(ds.records, (30, 40), HAM10000_CLASSES, with_masks=True, workers=2)
    assert dict(dec.skipped)[bad["no_mask"]] == "mask missing"
    assert tuple(dec.masks.shape) == (38, 1, 30, 40)
    assert dec.masks.dtype.is_floating_point is False
    assert set(np.unique(dec.masks.numpy())) <= {0, 1}


def test_decode_records_labels_and_unknown_class(ham_small):
    ds = load_dataset(ham_small)
    classes = ["mel", "nv"]
    dec = decode_records(ds.records, (16, 20), classes, workers=1)
    assert len(dec.records) == 12
    assert sorted(Counter(dec.labels.tolist()).items()) == [(0, 6), (1, 6)]
    assert all(classes[y] == r.label for y, r in zip(dec.labels, dec.records))
    assert len(dec.skipped) == 30 and all("not one of the model's classes" in why for _, why in dec.skipped)
    assert dec.images.dtype.__str__() == "torch.uint8"


# ----------------------------------------------------------------------------- masks
def test_ham_masks_read_as_lesion(ham_small, fullres):
    for root in (ham_small, fullres):
        for mask_path in sorted((root / "masks").glob("*.png"))[:3]:
            m = read_mask(mask_path)
            img = Image.open(root / "images" / mask_path.name.replace("_segmentation.png", ".jpg"))
            assert m.dtype == bool and m.shape == (img.height, img.width)
            assert 0.01 < m.mean() < 0.99


def _lesion():
    lesion = np.zeros((30, 40), bool)
    lesion[5:20, 8:30] = True
    return lesion


@pytest.mark.parametrize("inverted", [False, True])
def test_palette_masks_follow_the_palette(tmp_path, inverted):
    """Masks are read by colour (white = lesion), never by raw palette index.

    The inverted mask stores the lesion as index 0 and the background as index 1, with a palette
    mapping 0 -> white and 1 -> black: it looks identical to the normal one and must read the same.
    A reader that used the indices (index > 0) would swap lesion and background here.
    """
    lesion = _lesion()
    if inverted:
        idx, palette = np.where(lesion, 0, 1), [255, 255, 255, 0, 0, 0]
    else:
        idx, palette = np.where(lesion, 1, 0), [0, 0, 0, 255, 255, 255]
    img = Image.fromarray(idx.astype(np.uint8), "P")
    img.putpalette(palette + [0, 0, 0] * 254)
    path = tmp_path / "mask.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(np.asarray(Image.open(path)) == 1, ~lesion if inverted else lesion)
    got = read_mask(path)
    np.testing.assert_array_equal(got, lesion)
    np.testing.assert_array_equal(read_mask(path.read_bytes()), lesion)


def test_one_bit_and_grayscale_masks(tmp_path):
    lesion = _lesion()
    Image.fromarray(lesion).convert("1").save(tmp_path / "a.png")
    Image.fromarray((lesion * 255).astype(np.uint8), "L").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), lesion)
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), lesion)


# ----------------------------------------------------------------------------- splits
def _sides(splits):
    return {i: side for side, ids in splits.items() for i in ids}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fracs", [(0.15, 0.15), (0.3, 0.3), (0.25, 0.4)])
def test_split_is_lesion_disjoint_and_complete(ham_small, seed, fracs):
    ds = load_dataset(ham_small)
    splits = split_records(ds.records, seed=seed, val_frac=fracs[0], test_frac=fracs[1])
    side = _sides(splits)
    assert sorted(side) == sorted(r.image_id for r in ds.records)  # every image exactly once
    assert sum(len(v) for v in splits.values()) == len(ds.records)
    lesion_sides: dict[str, set] = {}
    for r in ds.records:
        lesion_sides.setdefault(r.lesion_id, set()).add(side[r.image_id])
    assert all(len(s) == 1 for s in lesion_sides.values()), "a lesion appears on two sides of the split"
    assert all(ids == sorted(ids) for ids in splits.values())


def test_split_with_big_fractions_puts_multi_image_lesions_outside_train(ham_small):
    """With large held-out fractions some multi-image lesions must go to val/test (whole)."""
    ds = load_dataset(ham_small)
    per_lesion = Counter(r.lesion_id for r in ds.records)
    held_out_multi = set()
    for seed in range(5):
        side = _sides(split_records(ds.records, seed=seed, val_frac=0.3, test_frac=0.3))
        held_out_multi |= {r.lesion_id for r in ds.records if per_lesion[r.lesion_id] > 1
                           and side[r.image_id] != "train"}
    assert held_out_multi


def test_split_is_stratified(ham_small):
    ds = load_dataset(ham_small)
    label = {r.image_id: r.label for r in ds.records}
    for seed in range(5):
        splits = split_records(ds.records, seed=seed)
        for side in ("train", "val", "test"):
            assert {label[i] for i in splits[side]} == set(HAM10000_CLASSES), (seed, side)
        assert len(splits["train"]) > len(splits["val"]) and len(splits["train"]) > len(splits["test"])


def test_split_deterministic_per_seed(ham_small):
    records = load_dataset(ham_small).records
    a = split_records(records, seed=0)
    assert split_records(list(reversed(records)), seed=0) == a  # input order does not matter
    assert split_records(records, seed=0) == a
    others = [split_records(records, seed=s) for s in (1, 2, 3)]
    assert all(o != a for o in others)


def test_split_hash_and_files(ham_small, tmp_path):
    splits = split_records(load_dataset(ham_small).records, seed=0)
    h = split_hash(splits)
    assert len(h) == 16
    shuffled = {k: list(reversed(v)) for k, v in reversed(list(splits.items()))}
    assert split_hash(shuffled) == h
    moved = {k: list(v) for k, v in splits.items()}
    moved["train"].append(moved["test"].pop())
    assert split_hash(moved) != h

    path = tmp_path / "sub" / "split.json"
    assert write_split(path, splits, seed=0, data="x") == h
    back, h2 = read_split(path)
    assert back == splits and h2 == h
    doc = json.loads(path.read_text())
    assert doc["hash"] == h and doc["seed"] == 0

    doc["splits"]["train"].append(doc["splits"]["test"].pop())
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="edited"):
        read_split(path)


def test_select_keeps_record_order(ham_small):
    records = load_dataset(ham_small).records
    wanted = [records[5].image_id, records[1].image_id]
    assert [r.image_id for r in select(records, wanted)] == [records[1].image_id, records[5].image_id]


# ----------------------------------------------------------------------------- shipped examples
def test_app_examples_are_documented(repo_root):
    ex = repo_root / "assets" / "examples"
    entries = json.loads((ex / "examples.json").read_text())
    assert len(entries) == 8
    assert {e["dx"] for e in entries} == set(HAM10000_CLASSES)
    assert sum(e["dx"] == "mel" for e in entries) == 2
    keys = {"file", "image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization", "split"}
    for e in entries:   # + what the shipped model and its gate make of it (tools/examples.py)
        assert set(e) == keys | {"gate", "shows"}
        assert e["split"] in ("train", "val", "test")
        assert e["file"] == f"{e['image_id']}.jpg"
        with Image.open(ex / e["file"]) as img:
            assert img.size == (600, 450) and img.format == "JPEG"
        mask = read_mask(ex / "masks" / f"{e['image_id']}_segmentation.png")
        assert mask.shape == (450, 600) and 0.01 < mask.mean() < 0.99
    assert sorted(p.name for p in ex.glob("*.jpg")) == sorted(e["file"] for e in entries)
    assert "CC BY-NC-SA 4.0" in (ex / "ATTRIBUTION.md").read_text()
    assert "10.1038/sdata.2018.161" in (repo_root / "tests" / "data" / "README.md").read_text()
