"""The same store on a real PostgreSQL server: migrations, a newer schema refused, idempotent
confirms, hostile text, and 8 writer threads with exact counts.

Optional: runs only when DERMO_TEST_POSTGRES_URL names a database this test may fill and empty,
e.g. postgresql+psycopg://review:review@127.0.0.1:5432/review_test (Debian: apt-get install
postgresql, then create that user and database); needs `pip install "psycopg[binary]"`. Skipped
otherwise, so CI does not depend on a server.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

URL = os.environ.get("DERMO_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="set DERMO_TEST_POSTGRES_URL to run against a PostgreSQL server")
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HOSTILE = "Robert'); DROP TABLE reads;-- <script>x</script> \u202e"


@pytest.fixture
def pg_url():
    pytest.importorskip("psycopg", reason='pip install "psycopg[binary]"')
    from sqlalchemy import create_engine, text

    engine = create_engine(URL)
    try:
        with engine.begin() as conn:  # an empty database for each test
            for table in ("reads", "readers", "cases", "studies", "schema_info"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL server at {URL}: {type(e).__name__}")
    finally:
        engine.dispose()
    yield URL


def test_postgres_store_round_trip_and_newer_schema(pg_url):
    from sqlalchemy import text

    from review import SchemaTooNew, Store
    from review.schema import LATEST
    from review.store import CaseIn

    store = Store(pg_url)
    assert store.version == LATEST
    study, code = store.create_study(HOSTILE, [CaseIn(HOSTILE, "ab" * 32, "upload", "mel", b"\x00png", b"\x00img")],
                                     classes=CLASSES, store_images=True)
    assert store.open_study(code)["name"] == HOSTILE and store.open_study("' OR '1'='1") is None
    case = store.cases(study["id"])[0]
    assert bytes(case["thumbnail"]) == b"\x00png" and store.case_image(study["id"], case["id"]) == b"\x00img"
    reader = store.reader(study["id"], HOSTILE)
    read, created = store.record_blind(study["id"], case["id"], reader["id"], "mel", 3, True)
    _, again = store.record_blind(study["id"], case["id"], reader["id"], "nv", 3, True)
    assert created and not again
    kw = dict(final_dx="nv", biopsy=False, changed_by_ai=True, heatmaps=[{"method": "gradcam", "rating": "on an artefact",
              "artefact": "ink"}], note=HOSTILE, ai_top="nv", ai_probability=0.5)
    assert store.record_final(study["id"], read["id"], **kw) and not store.record_final(study["id"], read["id"], **kw)
    rows = store.reads(study["id"])
    assert len(rows) == 1 and rows[0]["note"] == HOSTILE and rows[0]["heatmaps"][0]["artefact"] == "ink"

    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO schema_info (version, applied_at) VALUES (:v, 'later')"), {"v": LATEST + 1})
    with pytest.raises(SchemaTooNew, match="not changed"):
        Store(pg_url + "?application_name=newer")  # a fresh engine: the check runs again
    with store.engine.begin() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM reads")).scalar() == 1


def test_postgres_eight_writers_exact_counts(pg_url):
    from review import Store
    from review.store import CaseIn

    store = Store(pg_url)
    study, _ = store.create_study("load", [CaseIn(f"c{i}", f"{i:064x}", "upload", "nv") for i in range(12)],
                                  classes=CLASSES)
    cases = store.cases(study["id"])
    start = threading.Barrier(8)

    def reader(k: int) -> int:
        r = store.reader(study["id"], f"reader {k % 4}")  # two threads per name: two tabs of one reader
        start.wait(timeout=60)
        made = 0
        for c in cases:
            read, created = store.record_blind(study["id"], c["id"], r["id"], CLASSES[k % 7], 3, False)
            made += created
            store.record_final(study["id"], read["id"], final_dx="nv", biopsy=False, changed_by_ai=False,
                               heatmaps=[], note=str(k), ai_top="nv", ai_probability=0.9)
        return made

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(reader, range(8)))
    rows = store.reads(study["id"])
    assert sum(made) == len(rows) == 4 * len(cases)
    assert all(r["final_at"] for r in rows)
    assert len({(r["case_id"], r["reader_id"]) for r in rows}) == len(rows)
