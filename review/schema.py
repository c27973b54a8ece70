"""The schema, as numbered migrations applied in order on start-up.

`schema_info.version` records the last one applied. A database whose version is higher than the
last migration here was written by a newer app: it is refused (SchemaTooNew) before anything is
written to it. Each migration runs in one transaction, so a crash leaves the previous version.
Types are spelled per dialect only where SQLite and PostgreSQL differ (binary data).
"""
from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from review.errors import SchemaTooNew

BLOB = {"postgresql": "BYTEA"}


def _v1(dialect: str) -> list[str]:
    blob = BLOB.get(dialect, "BLOB")
    return [
        """CREATE TABLE studies (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            code_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            store_images INTEGER NOT NULL,
            teaching INTEGER NOT NULL,
            classes TEXT NOT NULL,
            classifier_version TEXT,
            segmenter_version TEXT)""",
        f"""CREATE TABLE cases (
            id TEXT PRIMARY KEY,
            study_id TEXT NOT NULL REFERENCES studies(id),
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            image_sha256 TEXT NOT NULL,
            source TEXT NOT NULL,
            truth TEXT,
            thumbnail {blob},
            image {blob},
            UNIQUE (study_id, position))""",
        """CREATE TABLE readers (
            id TEXT PRIMARY KEY,
            study_id TEXT NOT NULL REFERENCES studies(id),
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (study_id, name))""",
        """CREATE TABLE reads (
            id TEXT PRIMARY KEY,
            study_id TEXT NOT NULL REFERENCES studies(id),
            case_id TEXT NOT NULL REFERENCES cases(id),
            reader_id TEXT NOT NULL REFERENCES readers(id),
            blind_dx TEXT NOT NULL,
            blind_confidence INTEGER NOT NULL,
            blind_biopsy INTEGER NOT NULL,
            blind_at TEXT NOT NULL,
            ai_top TEXT,
            ai_probability REAL,
            classifier_version TEXT,
            segmenter_version TEXT,
            final_dx TEXT,
            final_biopsy INTEGER,
            changed_by_ai INTEGER,
            heatmaps TEXT,
            note TEXT,
            final_at TEXT,
            UNIQUE (case_id, reader_id))""",
        "CREATE INDEX reads_study ON reads (study_id, reader_id)",
    ]


def _v2(dialect: str) -> list[str]:
    """Decision aids (issue 15): which ones a study shows at the reveal, and which a read saw."""
    return ["ALTER TABLE studies ADD COLUMN aids TEXT",
            "ALTER TABLE reads ADD COLUMN aids_seen TEXT"]


def _v3(dialect: str) -> list[str]:
    """The gate's decision at the reveal (issue 26.11): a read whose AI answer was withheld is not
    an AI answer, and the export says so."""
    return ["ALTER TABLE reads ADD COLUMN ai_gated INTEGER",
            "ALTER TABLE reads ADD COLUMN ai_gate_reasons TEXT"]


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3}  # version -> statements; add 3: _v3 ... and never edit an applied one
LATEST = max(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_info"):
        return 0
    row = conn.execute(text("SELECT MAX(version) FROM schema_info")).scalar()
    return int(row or 0)


def migrate(conn: Connection, url_shown: str) -> int:
    """Bring the schema up to LATEST inside the caller's transaction; refuse a newer one."""
    version = current_version(conn)
    if version > LATEST:
        raise SchemaTooNew(
            f"The review database {url_shown} has schema version {version}, but this app knows only up to "
            f"version {LATEST}: it was written by a newer version of the app. It was not changed. Update the "
            "app, or point DERMO_REVIEW_DB at another database.")
    if version == 0:
        conn.execute(text("CREATE TABLE schema_info (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"))
    for v in range(version + 1, LATEST + 1):
        for statement in MIGRATIONS[v](conn.dialect.name):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO schema_info (version, applied_at) VALUES (:v, CURRENT_TIMESTAMP)"), {"v": v})
    return LATEST
