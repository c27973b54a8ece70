"""The review store: studies, their cases, readers and reads, behind one database URL.

Every method is one transaction, committed before it returns, so a confirmed read survives a
closed browser, a rerun or a killed server. Every query is scoped by the study id that the access
code opened, and takes user text only as bound parameters. Rows come out as plain dicts.
SQLite runs in WAL mode (set after the schema check, so a refused file is untouched) with `BEGIN IMMEDIATE` transactions (writers queue on the busy timeout
instead of failing) and synchronous=FULL.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from review.errors import StoreError
from review.schema import migrate
from review.url import database_url, describe

DIAGNOSES_EXTRA = ("unsure",)
RATINGS = ("on the lesion", "partly on the lesion", "on an artefact", "uninformative")
ARTEFACTS = ("ruler", "ink", "hair", "vignette", "bubble")
# Decision aids a study may add at the reveal, beside probabilities, heatmaps, outline and feature maps.
AIDS = ("prediction_set", "similar_cases", "checklist")
DEFAULT_AIDS = ("prediction_set", "similar_cases")   # the 7-point checklist panel (issue 24) is chosen explicitly
BUSY_TIMEOUT_S = 30


@dataclass
class CaseIn:
    """A case to add to a new study. `image` is kept only if the study stores images."""
    name: str
    image_sha256: str
    source: str                       # "example:<file>" or "upload"
    truth: str | None = None
    thumbnail: bytes | None = None
    image: bytes | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _new_id() -> str:
    return uuid.uuid4().hex


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def _sqlite_engine(url) -> Engine:
    db = url.database
    if db and db != ":memory:":
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is deferred and late)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            try:
                parsed = make_url(url)
            except Exception as e:  # noqa: BLE001 - any parse failure is the user's URL
                raise StoreError(f"The review database URL is not valid ({e}). Set DERMO_REVIEW_DB or "
                                 "[connections.review] url in .streamlit/secrets.toml, e.g. "
                                 "sqlite:///data/review.sqlite3.") from None
            _ENGINES[url] = (_sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite"
                             else create_engine(parsed, pool_pre_ping=True))
        return _ENGINES[url]


def open_store(url: str | None = None) -> "Store":
    """A migrated store at `url` (default: review.url.database_url())."""
    return Store(url or database_url())


class Store:
    """All reads and writes of review studies. Thread-safe (one connection per call)."""

    def __init__(self, url: str):
        self.url = url
        self.where = describe(url)
        self.engine = _engine(url)
        try:
            with self.engine.begin() as conn:
                self.version = migrate(conn, self.where)  # a newer schema raises before any write
            if self.engine.dialect.name == "sqlite":
                raw = self.engine.raw_connection()  # outside a transaction; WAL then stays set in the file
                try:
                    raw.cursor().execute("PRAGMA journal_mode=WAL")
                finally:
                    raw.close()
        except SQLAlchemyError as e:
            raise StoreError(f"The review database {self.where} cannot be opened: {e.__class__.__name__}: "
                             f"{str(e).splitlines()[0][:200]}. Check the path or URL and its permissions.") from None

    # ------------------------------------------------------------------ helpers
    def _rows(self, sql: str, **params) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]

    def _one(self, sql: str, **params) -> dict[str, Any] | None:
        rows = self._rows(sql, **params)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ studies
    def create_study(self, name: str, cases: Sequence[CaseIn], *, classes: Sequence[str], store_images: bool = False,
                     teaching: bool = False, model_versions: dict[str, str] | None = None,
                     aids: Sequence[str] = DEFAULT_AIDS) -> tuple[dict, str]:
        """A new study with its cases, in one transaction. Returns (study row, access code); the code
        is not stored (only its hash), so it can be shown once only."""
        if not cases:
            raise StoreError("A study needs at least one case.")
        unknown = [a for a in aids if a not in AIDS]
        if unknown:
            raise StoreError(f"Unknown decision aid {unknown[0]!r}; known: {', '.join(AIDS)}.")
        code = secrets.token_urlsafe(12)
        versions = model_versions or {}
        study = {"id": _new_id(), "name": str(name).strip()[:200] or "Untitled study", "code_hash": code_hash(code),
                 "created_at": _now(), "store_images": int(bool(store_images)), "teaching": int(bool(teaching)),
                 "classes": json.dumps(list(classes)), "classifier_version": versions.get("classifier"),
                 "segmenter_version": versions.get("segmenter"), "aids": json.dumps([a for a in AIDS if a in aids])}
        with self.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO studies (id, name, code_hash, created_at, store_images, teaching, classes, "
                "classifier_version, segmenter_version, aids) VALUES (:id, :name, :code_hash, :created_at, "
                ":store_images, :teaching, :classes, :classifier_version, :segmenter_version, :aids)"), study)
            conn.execute(text(
                "INSERT INTO cases (id, study_id, position, name, image_sha256, source, truth, thumbnail, image) "
                "VALUES (:id, :study_id, :position, :name, :image_sha256, :source, :truth, :thumbnail, :image)"),
                [{"id": _new_id(), "study_id": study["id"], "position": i, "name": str(c.name)[:300],
                  "image_sha256": c.image_sha256, "source": c.source, "truth": c.truth, "thumbnail": c.thumbnail,
                  "image": c.image if store_images else None} for i, c in enumerate(cases)])
        return self._study_row(study["id"]), code

    def _study_row(self, study_id: str) -> dict:
        row = self._one("SELECT id, name, created_at, store_images, teaching, classes, classifier_version, "
                        "segmenter_version, aids FROM studies WHERE id = :id", id=study_id)
        if row is None:
            raise StoreError("No such study.")
        row["classes"] = json.loads(row["classes"])
        row["aids"] = json.loads(row["aids"]) if row.get("aids") else []  # studies made before aids: none
        row["store_images"], row["teaching"] = bool(row["store_images"]), bool(row["teaching"])
        return row

    def study(self, study_id: str) -> dict:
        """A study by the id that its access code opened (raises StoreError when there is none)."""
        return self._study_row(study_id)

    def open_study(self, code: str) -> dict | None:
        """The study this access code opens, or None. Nothing else finds a study."""
        if not isinstance(code, str) or not code.strip():
            return None
        row = self._one("SELECT id FROM studies WHERE code_hash = :h", h=code_hash(code))
        return self._study_row(row["id"]) if row else None

    # ------------------------------------------------------------------ cases
    def cases(self, study_id: str) -> list[dict]:
        """The study's cases in order (without image bytes; `has_image` says whether they are stored)."""
        return self._rows("SELECT id, position, name, image_sha256, source, truth, thumbnail, "
                          "CASE WHEN image IS NULL THEN 0 ELSE 1 END AS has_image FROM cases "
                          "WHERE study_id = :s ORDER BY position", s=study_id)

    def case_image(self, study_id: str, case_id: str) -> bytes | None:
        row = self._one("SELECT image FROM cases WHERE id = :c AND study_id = :s", c=case_id, s=study_id)
        return None if row is None or row["image"] is None else bytes(row["image"])

    # ------------------------------------------------------------------ readers
    def reader(self, study_id: str, name: str) -> dict:
        """The study's reader with this name, created on first use (names are kept as typed)."""
        name = str(name).strip()[:100]
        if not name:
            raise StoreError("Type a reader name.")
        found = self._one("SELECT id, study_id, name, created_at FROM readers WHERE study_id = :s AND name = :n",
                          s=study_id, n=name)
        if found:
            return found
        row = {"id": _new_id(), "study_id": study_id, "name": name, "created_at": _now()}
        try:
            with self.engine.begin() as conn:
                conn.execute(text("INSERT INTO readers (id, study_id, name, created_at) "
                                  "VALUES (:id, :study_id, :name, :created_at)"), row)
        except IntegrityError:  # another tab created the same reader at the same moment
            pass
        return self._one("SELECT id, study_id, name, created_at FROM readers WHERE study_id = :s AND name = :n",
                         s=study_id, n=name)

    def readers(self, study_id: str) -> list[dict]:
        return self._rows("SELECT id, name, created_at FROM readers WHERE study_id = :s ORDER BY created_at",
                          s=study_id)

    # ------------------------------------------------------------------ reads
    def record_blind(self, study_id: str, case_id: str, reader_id: str, dx: str, confidence: int,
                     biopsy: bool) -> tuple[dict, bool]:
        """Commit a blind read. Returns (read row, created); a second confirm of the same case by the
        same reader (another tab, a double click) returns the first one unchanged."""
        self._check_pair(study_id, case_id, reader_id)
        self._check_dx(study_id, dx)
        row = {"id": _new_id(), "study_id": study_id, "case_id": case_id, "reader_id": reader_id, "blind_dx": dx,
               "blind_confidence": int(confidence), "blind_biopsy": int(bool(biopsy)), "blind_at": _now()}
        created = True
        try:
            with self.engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO reads (id, study_id, case_id, reader_id, blind_dx, blind_confidence, blind_biopsy, "
                    "blind_at) VALUES (:id, :study_id, :case_id, :reader_id, :blind_dx, :blind_confidence, "
                    ":blind_biopsy, :blind_at)"), row)
        except IntegrityError:
            created = False
        return self.read_of(study_id, case_id, reader_id), created

    def record_final(self, study_id: str, read_id: str, *, final_dx: str, biopsy: bool, changed_by_ai: bool,
                     heatmaps: Iterable[dict], note: str, ai_top: str | None, ai_probability: float | None,
                     model_versions: dict[str, str] | None = None, aids_seen: Sequence[str] = (),
                     ai_gated: bool | None = None, ai_gate_reasons: Sequence[str] = ()) -> bool:
        """Commit the after-AI part of a read once. False if it was already committed (another tab).
        `ai_gated`: the gate withheld the AI's answer at the reveal (`ai_gate_reasons`: why)."""
        self._check_dx(study_id, final_dx)
        versions = model_versions or {}
        hm = [{k: h.get(k) for k in ("method", "layer", "cam_class", "rating", "artefact", "heat_in_lesion", "road")}
              for h in heatmaps]
        for h in hm:
            if h["rating"] is not None and h["rating"] not in RATINGS:
                raise StoreError(f"Unknown heatmap rating {h['rating']!r}.")
            if h["artefact"] is not None and h["artefact"] not in ARTEFACTS:
                raise StoreError(f"Unknown artefact {h['artefact']!r}.")
        with self.engine.begin() as conn:
            done = conn.execute(text(
                "UPDATE reads SET final_dx = :final_dx, final_biopsy = :final_biopsy, changed_by_ai = :changed, "
                "heatmaps = :heatmaps, note = :note, ai_top = :ai_top, ai_probability = :ai_probability, "
                "classifier_version = :cv, segmenter_version = :sv, aids_seen = :aids, ai_gated = :gated, "
                "ai_gate_reasons = :reasons, final_at = :at "
                "WHERE id = :id AND study_id = :s AND final_at IS NULL"),
                {"final_dx": final_dx, "final_biopsy": int(bool(biopsy)), "changed": int(bool(changed_by_ai)),
                 "heatmaps": json.dumps(hm), "note": str(note)[:4000], "ai_top": ai_top,
                 "ai_probability": None if ai_probability is None else float(ai_probability),
                 "cv": versions.get("classifier"), "sv": versions.get("segmenter"), "at": _now(),
                 "aids": json.dumps([str(a)[:100] for a in aids_seen]),
                 "gated": None if ai_gated is None else int(bool(ai_gated)),
                 "reasons": json.dumps([str(a)[:200] for a in ai_gate_reasons]),
                 "id": read_id, "s": study_id})
            return done.rowcount == 1

    def read_of(self, study_id: str, case_id: str, reader_id: str) -> dict | None:
        return self._one("SELECT * FROM reads WHERE study_id = :s AND case_id = :c AND reader_id = :r",
                         s=study_id, c=case_id, r=reader_id)

    def reads(self, study_id: str, reader_id: str | None = None) -> list[dict]:
        """Every read of the study (or of one reader) with its case and reader, oldest first."""
        sql = ("SELECT r.*, c.position, c.name AS case_name, c.image_sha256, c.truth, d.name AS reader "
               "FROM reads r JOIN cases c ON c.id = r.case_id JOIN readers d ON d.id = r.reader_id "
               "WHERE r.study_id = :s" + (" AND r.reader_id = :r" if reader_id else "") +
               " ORDER BY r.blind_at, r.id")
        rows = self._rows(sql, s=study_id, r=reader_id)
        for r in rows:
            r["heatmaps"] = json.loads(r["heatmaps"]) if r.get("heatmaps") else []
            r["aids_seen"] = json.loads(r["aids_seen"]) if r.get("aids_seen") else []
            r["ai_gate_reasons"] = json.loads(r["ai_gate_reasons"]) if r.get("ai_gate_reasons") else []
        return rows

    def next_case(self, study_id: str, reader_id: str) -> tuple[dict, dict | None] | None:
        """Where this reader stopped: the first case without a finished read, with its blind read if
        one was committed; None when every case is done."""
        done = {r["case_id"]: r for r in self._rows(
            "SELECT * FROM reads WHERE study_id = :s AND reader_id = :r", s=study_id, r=reader_id)}
        for case in self.cases(study_id):
            read = done.get(case["id"])
            if read is None or read["final_at"] is None:
                return case, read
        return None

    # ------------------------------------------------------------------ checks
    def _check_pair(self, study_id: str, case_id: str, reader_id: str) -> None:
        ok = self._one("SELECT c.id FROM cases c JOIN readers d ON d.study_id = c.study_id "
                       "WHERE c.id = :c AND d.id = :r AND c.study_id = :s", c=case_id, r=reader_id, s=study_id)
        if ok is None:
            raise StoreError("That case or reader does not belong to this study.")

    def _check_dx(self, study_id: str, dx: str) -> None:
        classes = self._study_row(study_id)["classes"]
        if dx not in (*classes, *DIAGNOSES_EXTRA):
            raise StoreError(f"Unknown diagnosis {dx!r}: choose one of {', '.join(classes)} or 'unsure'.")
