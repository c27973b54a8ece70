"""Similar confirmed cases: a reference set of the classifier's training images, searched by the
cosine similarity of its pre-logit features (Tschandl et al., Br J Dermatol 2019).

Beside the bundle:
  similar.safetensors         embeddings (L2-normalised after a PCA fitted on the reference images,
                              float16), the PCA, class indices, file sha256 and a 64-bit difference
                              hash per image; the header holds the bundle weights' sha256, the classes
                              and every case's metadata (image id, diagnosis, dx_type, age, sex, site)
  similar-thumbs.safetensors  all thumbnails (JPEG) packed in one byte array with offsets
  REFERENCE-SET.md            what the images are and their licence (HAM10000, CC BY-NC-SA 4.0)

Only the TRAINING split of the bundle's split.json is used, never validation or test images.
An index built for other weights is refused (ReferenceSetError), never searched.

    python -m model.cli.similar build BUNDLE --data DIR [--dims 256] [--thumb 128x96]
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from model.nets.weights_hash import weights_sha256

INDEX = "similar.safetensors"
THUMBS = "similar-thumbs.safetensors"
ATTRIBUTION = "REFERENCE-SET.md"
DEFAULT_K = 6
DEFAULT_DIMS = 256
THUMB_WH = (128, 96)
FORMAT = 1
NEAR_DUPLICATE_BITS = 8          # references this close by difference hash are compared pixel by pixel ...
NEAR_DUPLICATE_CANDIDATES = 20   # ... at most this many, closest first ...
NEAR_DUPLICATE_CORRELATION = 0.99  # ... and one this correlated (32x24 grey levels) is the same picture
CREDIT = ("Reference images: HAM10000 (Tschandl, Rosendahl & Kittler, Scientific Data 5:180161, 2018, "
          "doi:10.1038/sdata.2018.161), CC BY-NC-SA 4.0, downscaled thumbnails.")
REBUILD = "python -m model.cli.similar build {bundle} --data DIR"


class ReferenceSetError(ValueError):
    """A reference set that cannot be used with this bundle; the message says how to rebuild it."""


@dataclass
class Neighbour:
    image_id: str
    diagnosis: str
    similarity: float
    dx_type: str = ""
    age: str = ""
    sex: str = ""
    site: str = ""
    thumbnail: bytes = b""      # JPEG


@dataclass
class SimilarCases:
    """What one query returns (plain data: the UI renders it, predict prints it)."""
    neighbours: list[Neighbour]
    vote: dict[str, float]                  # class -> similarity-weighted share of the k neighbours
    vote_class: str
    in_reference: str | None = None         # how the upload itself is in the reference set, if it is


def difference_hash(rgb: np.ndarray) -> int:
    """64-bit dHash of an RGB image: stable across resizing and recompression, so an upload of a
    reference image at another resolution is still recognised."""
    from PIL import Image

    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _decode(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def _grey_signature(rgb: np.ndarray) -> np.ndarray:
    """32x24 grey levels (through the thumbnail size, as the references were), zero mean, unit norm."""
    from PIL import Image

    im = Image.fromarray(rgb)
    if im.size != THUMB_WH:
        im = im.resize(THUMB_WH, Image.Resampling.BOX)
    g = np.asarray(im.convert("L").resize((32, 24), Image.Resampling.BOX), np.float32)
    g = g - g.mean()
    return g / (np.linalg.norm(g) + 1e-6)


def similarities(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, n) inner products. A few queries go through einsum's own single-threaded loop: a BLAS
    matrix-vector product with 2 threads on 2 busy cores was measured at 16 ms against 0.13 ms
    (the same holds for the PCA projection in `embed`). More go through torch's matmul, whose
    threads sleep while they wait (a batch of 32: numpy's BLAS 16-38 ms on busy cores)."""
    if len(queries) <= 4:
        return np.einsum("nj,ij->ni", queries, reference)
    return _matmul(queries, reference.T)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(np.ascontiguousarray(a, np.float32)) @ torch.from_numpy(np.asarray(b, np.float32))).numpy()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def vote_shares(labels: np.ndarray, sims: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) similarity-weighted class shares of each query's neighbours (labels, sims: (N, k))."""
    w = np.maximum(sims, 1e-6)
    out = np.zeros((len(labels), n_classes))
    np.add.at(out, (np.repeat(np.arange(len(labels)), labels.shape[1]), labels.ravel()), w.ravel())
    return out / out.sum(1, keepdims=True)


class ReferenceIndex:
    """A loaded reference set. `search` is plain numpy: one (n x d) matrix product."""

    def __init__(self, tensors: dict[str, np.ndarray], header: dict[str, str], thumbs: dict[str, np.ndarray] | None):
        self.embeddings = tensors["embeddings"].astype(np.float32)
        self.pca_mean = tensors["pca_mean"].astype(np.float32)
        self.pca = tensors["pca_components"].astype(np.float32)       # (D, d)
        self.labels = tensors["labels"].astype(np.int64)
        self.dhash = tensors["dhash"].view(np.uint64) if tensors["dhash"].dtype != np.uint64 else tensors["dhash"]
        self.sha256 = tensors["sha256"]
        self.classes: list[str] = json.loads(header["classes"])
        self.cases: list[list[str]] = json.loads(header["cases"])       # [image_id, dx_type, age, sex, site]
        self.header = header
        self._sha_index = {bytes(s).hex(): i for i, s in enumerate(self.sha256)}
        self._thumbs = thumbs
        self._signatures: dict[int, np.ndarray] = {}

    @property
    def has_thumbnails(self) -> bool:
        return self._thumbs is not None

    def holds_file(self, file_sha256: str | None) -> bool:
        """Whether a reference image is this exact file (by sha256)."""
        return bool(file_sha256) and file_sha256 in self._sha_index

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, bundle_dir: str | Path, classes: Sequence[str], weights_hash: str | None = None) -> "ReferenceIndex":
        """Read and check the index beside a bundle; ReferenceSetError if it was made for other weights."""
        bundle_dir = Path(bundle_dir)
        path = bundle_dir / INDEX
        hint = REBUILD.format(bundle=bundle_dir)
        if not path.is_file():
            raise FileNotFoundError(f"No reference set ({INDEX}) in {bundle_dir}. Build it with `{hint}`.")
        try:
            from safetensors import safe_open

            with safe_open(str(path), "np") as f:
                header = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ReferenceSetError(f"{path} is not a valid reference set ({str(e)[:120]}). Rebuild it with `{hint}`.") from None
        if header.get("format") != str(FORMAT):
            raise ReferenceSetError(f"{path} has format {header.get('format')!r}, this code reads {FORMAT}. "
                                 f"Rebuild it with `{hint}`.")
        expected = weights_hash or weights_sha256(bundle_dir)
        if header.get("weights_sha256") != expected:
            raise ReferenceSetError(
                f"The reference set in {bundle_dir} was built for other weights (weights sha256 "
                f"{str(header.get('weights_sha256'))[:12]}…, the bundle's is {expected[:12]}…): its neighbours "
                f"would be wrong, so similar cases are off. Rebuild it with `{hint}`.")
        if json.loads(header.get("classes", "[]")) != list(classes):
            raise ReferenceSetError(f"The reference set in {bundle_dir} lists other classes than the bundle. "
                                 f"Rebuild it with `{hint}`.")
        thumbs = None
        if (bundle_dir / THUMBS).is_file():
            try:
                thumbs = load_file(str(bundle_dir / THUMBS))
            except (SafetensorError, OSError, ValueError):
                thumbs = None
        return cls(tensors, header, thumbs)

    # ------------------------------------------------------------------ queries
    def embed(self, features: np.ndarray) -> np.ndarray:
        """Pre-logit features (N, D) -> unit vectors in the index's space (N, d)."""
        f = l2_normalize(np.atleast_2d(np.asarray(features, np.float32)))
        centred = f - self.pca_mean
        return l2_normalize(np.einsum("nd,dk->nk", centred, self.pca) if len(f) <= 4 else _matmul(centred, self.pca))

    def search(self, features: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
        """(indices, cosine similarities), each (N, k), most similar first."""
        sims = similarities(self.embed(features), self.embeddings)
        k = min(k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sims, idx, 1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(idx, order, 1), np.take_along_axis(part, order, 1)

    def thumbnail(self, i: int) -> bytes:
        if self._thumbs is None:
            return b""
        off = self._thumbs["offsets"]
        return self._thumbs["jpeg"][int(off[i]):int(off[i + 1])].tobytes()

    def find_self(self, file_sha256: str | None, rgb: np.ndarray | None, dhash: int | None = None) -> str | None:
        """How the query is itself a reference image: the same file (sha256), or the same picture at
        another size or compression (the references closest by difference hash, compared pixel by
        pixel with their thumbnails at 32x24 grey levels). `dhash`: difference_hash(rgb), if known."""
        if file_sha256 and file_sha256 in self._sha_index:
            return f"This exact file is reference case {self.cases[self._sha_index[file_sha256]][0]} (training split)."
        if rgb is None or self._thumbs is None:
            return None
        bits = np.bitwise_count(self.dhash ^ np.uint64(difference_hash(rgb) if dhash is None else dhash))
        close = np.flatnonzero(bits <= NEAR_DUPLICATE_BITS)   # the closest first, as a stable sort of all
        near = close[np.argsort(bits[close], kind="stable")][:NEAR_DUPLICATE_CANDIDATES].tolist()
        if not near:
            return None
        mine = _grey_signature(rgb)
        corr, best = max((float((self._signature(i) * mine).sum()), i) for i in near)
        if corr >= NEAR_DUPLICATE_CORRELATION:
            return (f"This image appears to be reference case {self.cases[best][0]} (training split) at another "
                    "size or compression: the model has seen it.")
        return None

    def _signature(self, i: int) -> np.ndarray:
        sig = self._signatures.get(i)
        if sig is None:  # decoded once per reference image (a dict write is atomic: thread-safe enough)
            sig = self._signatures[i] = _grey_signature(_decode(self.thumbnail(i)))
        return sig

    def query(self, features: np.ndarray, k: int = DEFAULT_K, file_sha256: str | None = None,
              rgb: np.ndarray | None = None, thumbnails: bool = True) -> SimilarCases:
        return self.query_many(np.atleast_2d(features), k, [file_sha256], [rgb], thumbnails)[0]

    def query_many(self, features: np.ndarray, k: int = DEFAULT_K, file_sha256s=None, rgbs=None,
                   thumbnails: bool = True, dhashes=None) -> list[SimilarCases]:
        """query for each row of (N, D) features, searched in one pass; per row an optional file
        sha256, working image and its difference hash for the self-check."""
        n = len(features)
        file_sha256s, rgbs, dhashes = (v if v is not None else [None] * n for v in (file_sha256s, rgbs, dhashes))
        idx, sims = self.search(features, k)
        shares = vote_shares(self.labels[idx], sims, len(self.classes))
        out = []
        for row, srow, share, sha, rgb, dh in zip(idx, sims, shares, file_sha256s, rgbs, dhashes):
            neighbours = [Neighbour(self.cases[i][0], self.classes[self.labels[i]], float(s), *self.cases[i][1:5],
                                    thumbnail=self.thumbnail(i) if thumbnails else b"") for i, s in zip(row, srow)]
            out.append(SimilarCases(neighbours, {c: float(v) for c, v in zip(self.classes, share)},
                                    self.classes[int(share.argmax())], self.find_self(sha, rgb, dh)))
        return out
