"""Building the similar-cases reference set of a classifier bundle (see model/aids/similar.py for the
files and how they are searched): embed the training split, fit the PCA, write the index, the
packed thumbnails and the attribution beside the bundle."""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import save_file

from model.aids.similar import (ATTRIBUTION, CREDIT, DEFAULT_DIMS, DEFAULT_K, FORMAT, INDEX, THUMB_WH, THUMBS,
                                difference_hash, l2_normalize)
from model.nets.weights_hash import weights_sha256


def case_metadata(data_dir: Path) -> dict[str, list[str]]:
    """image_id -> [dx_type, age, sex, site] from the folder's HAM10000 metadata, when it has one."""
    from model.data.tables import DatasetError, read_table_file

    for name in ("metadata.csv", "HAM10000_metadata.csv", "HAM10000_metadata"):
        if (data_dir / name).is_file():
            try:
                table = read_table_file(data_dir / name)
            except DatasetError:
                return {}
            out = {}
            for _, row in table.rows:
                age = row.get("age", "")
                age = str(int(float(age))) if age.replace(".", "", 1).isdigit() else ""
                out[row.get("image_id", "")] = [row.get("dx_type", ""), age, row.get("sex", "").replace("unknown", ""),
                                                row.get("localization", "").replace("unknown", "")]
            return out
    return {}


def _jpeg(rgb: np.ndarray, wh: tuple[int, int], quality: int = 70) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).resize(wh, Image.Resampling.BOX).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def embed_images(bundle, images_u8, batch_size: int = 64, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(pre-logit features, raw logits) of an Nx3xHxW uint8 tensor at the bundle's input size."""
    import torch

    from model.nets.forward import model_device, uses_channels_last
    from model.data.preprocess import normalize

    feats, logits = [], []
    dev = model_device(bundle.model)
    with torch.inference_mode():
        for i in range(0, len(images_u8), batch_size):
            x = normalize(images_u8[i:i + batch_size].to(dev), bundle.mean, bundle.std, uses_channels_last(bundle))
            final = bundle.model.forward_features(x)
            feats.append(bundle.model.forward_head(final, pre_logits=True).float().cpu().numpy())
            logits.append(bundle.model.forward_head(final).float().cpu().numpy())
            if progress:
                progress(min(i + batch_size, len(images_u8)), len(images_u8))
    d = bundle.model.num_features if hasattr(bundle.model, "num_features") else 0
    return (np.concatenate(feats) if feats else np.zeros((0, d), np.float32),
            np.concatenate(logits) if logits else np.zeros((0, len(bundle.classes)), np.float32))


def decode_split(bundle, data_dir: Path, split: str, chunk: int = 512, progress: bool = False):
    """Yield (records, uint8 images) of one split of the bundle's split.json, a chunk at a time."""
    from model.data.dataset import decode_records
    from model.data.dataset import records_for_split

    records = records_for_split(bundle.path, data_dir, split)
    for i in range(0, len(records), chunk):
        if progress:
            print(f"  {split}: {i}/{len(records)} images", file=sys.stderr)
        d = decode_records(records[i:i + chunk], bundle.input_size, bundle.classes, domain=bundle.domain)
        yield d.records, d.images


def fit_pca(features: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, components (D, d), share of variance kept) of L2-normalised features; dims 0 = all."""
    f = l2_normalize(features.astype(np.float64))
    mean = f.mean(0)
    if not dims or dims >= min(f.shape):
        return mean.astype(np.float32), np.eye(f.shape[1], dtype=np.float32), 1.0
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dims].T.astype(np.float32), float((s[:dims] ** 2).sum() / (s ** 2).sum())


def write_reference(bundle_dir: Path, classes: Sequence[str], split_hash: str, features: np.ndarray,
                    labels: np.ndarray, records: Sequence, thumbs: Sequence[bytes], dhashes: Sequence[int],
                    shas: Sequence[bytes], metadata: dict[str, list[str]], dims: int = DEFAULT_DIMS) -> dict:
    """Write the index and packed thumbnails beside the bundle; returns a summary for meta.json."""
    mean, comps, kept = fit_pca(features, dims)
    comps = comps.astype(np.float16).astype(np.float32)
    emb = l2_normalize((l2_normalize(features.astype(np.float32)) - mean) @ comps)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in thumbs])]).astype(np.int64)
    cases = [[r.image_id, *metadata.get(r.image_id, ["", "", "", ""])] for r in records]
    header = {"format": str(FORMAT), "weights_sha256": weights_sha256(bundle_dir), "classes": json.dumps(list(classes)),
              "split_hash": split_hash, "split": "train", "cases": json.dumps(cases, separators=(",", ":")),
              "pca_variance_kept": f"{kept:.4f}", "credit": CREDIT}
    from model.files import atomic_write

    tensors = {"embeddings": emb.astype(np.float16), "pca_mean": mean, "pca_components": comps.astype(np.float16),
               "labels": np.asarray(labels, np.int16), "dhash": np.asarray(dhashes, np.uint64).view(np.int64),
               "sha256": np.frombuffer(b"".join(shas), np.uint8).reshape(-1, 32)}
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # safetensors writes memory order
    atomic_write(bundle_dir / INDEX, lambda p: save_file(tensors, p, metadata=header))
    atomic_write(bundle_dir / THUMBS, lambda p: save_file({
        "jpeg": np.frombuffer(b"".join(thumbs), np.uint8).copy(), "offsets": offsets}, p,
        metadata={"format": str(FORMAT), "credit": CREDIT, "size_wh": json.dumps(THUMB_WH)}))
    (bundle_dir / ATTRIBUTION).write_text(
        "# Reference set (similar cases): attribution and licence\n\n"
        f"`{INDEX}` and `{THUMBS}` hold features and {THUMB_WH[0]}x{THUMB_WH[1]} JPEG thumbnails of the "
        f"{len(records)} images of this classifier's training split (split hash `{split_hash}`), from the HAM10000 "
        "dataset:\n\nTschandl P., Rosendahl C. & Kittler H. \"The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions.\" Scientific Data 5:180161 (2018), "
        "doi:[10.1038/sdata.2018.161](https://doi.org/10.1038/sdata.2018.161).\n\nLicence: "
        "[CC BY-NC-SA 4.0](https://creativecommons.org/licenses/by-nc-sa/4.0/) (attribution, non-commercial use "
        "only, share-alike). The thumbnails are downscaled; diagnoses and metadata (dx_type, age, sex, site) are "
        "HAM10000's.\n\nRebuilt by `python -m model.cli.similar build BUNDLE --data DIR`.\n")
    size = sum((bundle_dir / f).stat().st_size for f in (INDEX, THUMBS))
    return {"file": INDEX, "thumbnails": THUMBS, "n": len(records), "split": "train", "dims": int(comps.shape[1]),
            "pca_variance_kept": round(kept, 4), "bytes": size, "k": DEFAULT_K,
            "weights_sha256": header["weights_sha256"][:16]}


def build_from_features(bundle, features, images_u8, records, data_dir: Path, dims: int = DEFAULT_DIMS) -> dict:
    """Reference set from training images already embedded (and decoded at the input size)."""
    from model.data.dataset import read_split

    _, split_hash = read_split(bundle.path / "split.json")
    rgbs = (img.permute(1, 2, 0).numpy() for img in images_u8)
    thumbs, dhashes, shas = [], [], []
    for r, rgb in zip(records, rgbs):
        thumbs.append(_jpeg(rgb, THUMB_WH))
        dhashes.append(difference_hash(rgb))
        shas.append(hashlib.sha256(Path(r.image_path).read_bytes()).digest() if r.image_path else bytes(32))
    labels = [bundle.classes.index(r.label) for r in records]
    return write_reference(bundle.path, bundle.classes, split_hash, features, np.asarray(labels), records, thumbs,
                           dhashes, shas, case_metadata(Path(data_dir)), dims)


def build(bundle, data_dir: Path, dims: int = DEFAULT_DIMS, progress: bool = False) -> dict:
    """Decode the bundle's training split from `data_dir` a chunk at a time and write the reference set."""
    import torch

    feats, recs, imgs = [], [], []
    for records, images in decode_split(bundle, data_dir, "train", progress=progress):
        feats.append(embed_images(bundle, images)[0])
        recs += records
        imgs.append(images)
    if not recs:
        from model.data.dataset import DatasetError
        raise DatasetError("No readable training images to build the reference set from.")
    return build_from_features(bundle, np.concatenate(feats), torch.cat(imgs), recs, data_dir, dims)
