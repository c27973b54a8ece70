"""The pipeline's stage for the two aids beside the probabilities: similar confirmed cases (from the
reference set beside the bundle) and conformal prediction sets (from meta.json). Either may be
missing; an index made for other weights is refused with its message kept for the page."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.aids.conformal import conformal_config, sets_many, threshold_table
from model.aids.similar import DEFAULT_K, INDEX, ReferenceSetError, ReferenceIndex, SimilarCases, difference_hash


def file_sha256(source) -> str | None:
    """sha256 of an upload's bytes (bytes or a path); None for arrays."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    if isinstance(source, (str, Path)):
        try:
            return hashlib.sha256(Path(source).read_bytes()).hexdigest()
        except OSError:
            return None
    return None


@dataclass
class CaseAids:
    classes: list[str]
    index: ReferenceIndex | None
    index_error: str | None
    conformal: dict | None
    _table: tuple | None = None       # conformal thresholds, all coverages (built on first use)

    @classmethod
    def from_bundle(cls, bundle) -> "CaseAids":
        index, error = None, None
        if (bundle.path / INDEX).is_file():
            try:
                index = ReferenceIndex.load(bundle.path, bundle.classes)
            except ReferenceSetError as e:
                error = str(e)
        else:
            error = (f"This classifier has no reference set of similar cases. Build one with "
                     f"`python -m model.cli.similar build {bundle.path} --data DIR`.")
        return cls(bundle.classes, index, error, conformal_config(bundle.meta))

    def similar(self, features: np.ndarray, source=None, rgb: np.ndarray | None = None, k: int = DEFAULT_K,
                thumbnails: bool = True) -> SimilarCases | None:
        if self.index is None:
            return None
        return self.index.query(features, k, file_sha256(source), rgb, thumbnails)

    def self_check_keys(self, source, rgb: np.ndarray) -> tuple[str | None, int | None]:
        """(file sha256, difference hash) for the self-check; the hash only when the sha256 does not
        already settle it. Pure per-image work, so batch review runs it on its lanes."""
        sha = file_sha256(source)
        if self.index is None or not self.index.has_thumbnails or self.index.holds_file(sha):
            return sha, None
        return sha, difference_hash(rgb)

    def similar_many(self, features: np.ndarray, shas, rgbs, dhashes) -> list[SimilarCases | None]:
        """Batch review's query (no thumbnails) for each row of (N, D) features, one search."""
        if self.index is None:
            return [None] * len(features)
        return self.index.query_many(features, DEFAULT_K, shas, rgbs, thumbnails=False, dhashes=dhashes)

    def sets(self, probs: np.ndarray) -> dict[int, list[str]]:
        return self.sets_many(np.asarray(probs)[None])[0]

    def sets_many(self, probs: np.ndarray) -> list[dict[int, list[str]]]:
        """Conformal sets for each row of (N, K) probabilities ({} each without a calibration)."""
        if not self.conformal:
            return [{} for _ in range(len(probs))]
        if self._table is None:
            self._table = threshold_table(self.conformal, self.classes)   # same result if two threads race
        return sets_many(probs, self.conformal, self.classes, self._table)



def aids_json(pred, coverage: int) -> dict:
    """A BatchPrediction's aids as JSON fields: `prediction_set` (class codes at `coverage` percent),
    `similar` (the k neighbours' image ids, diagnoses, similarities), `knn_vote`, `in_reference_set`."""
    s = pred.similar
    return {"prediction_set": pred.prediction_sets.get(int(coverage)) if pred.prediction_sets else None,
            "similar": None if s is None else [{"image_id": n.image_id, "diagnosis": n.diagnosis,
                                                "similarity": round(n.similarity, 4)} for n in s.neighbours],
            "knn_vote": None if s is None else s.vote_class,
            "in_reference_set": None if s is None else s.in_reference}
