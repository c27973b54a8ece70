"""The review store without a browser: migrations, a newer schema refused untouched, access codes,
hostile text kept as plain text, idempotent confirms, where a reader stopped, statistics, and the
database URL lookup."""
from __future__ import annotations

import sqlite3

import pytest

from review import SchemaTooNew, Store, StoreError, database_url
from review.schema import LATEST
from review.stats import accuracy, export_rows, heatmap_ratings, per_class
from review.store import CaseIn

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HOSTILE = "Robert'); DROP TABLE reads;-- <script>alert(1)</script> =cmd|' /C calc'!A0 **bold** \u202e"


def _url(tmp_path, name="review.sqlite3") -> str:
    return f"sqlite:///{tmp_path / name}"


def _study(store: Store, n=3, truths=("mel", "nv", None), **kw):
    cases = [CaseIn(f"case{i}.jpg", f"{i:064x}", "upload", truths[i % len(truths)], b"png") for i in range(n)]
    return store.create_study("Study A", cases, classes=CLASSES, model_versions={"classifier": "v1"}, **kw)


def test_migrates_a_new_database_and_reopens(tmp_path):
    store = Store(_url(tmp_path))
    assert store.version == LATEST
    con = sqlite3.connect(tmp_path / "review.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"studies", "cases", "readers", "reads", "schema_info"} <= {
        r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert Store(_url(tmp_path)).version == LATEST  # second open: nothing to apply


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schema_info (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
    con.execute("INSERT INTO schema_info VALUES (?, 'later')", (LATEST + 5,))
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST + 5}.*not changed"):
        Store(f"sqlite:///{path}")
    assert path.read_bytes() == before
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")] == [
        "other", "schema_info"]


def test_bad_url_and_unwritable_place_give_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="not valid"):
        Store("::not a url::")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((StoreError, OSError)):
        Store(f"sqlite:///{blocker}/sub/review.sqlite3")


def test_access_code_opens_only_its_study(tmp_path):
    store = Store(_url(tmp_path))
    a, code_a = _study(store)
    b, code_b = _study(store)
    assert code_a != code_b and len(code_a) >= 16
    assert store.open_study(code_a)["id"] == a["id"]
    assert store.open_study(f"  {code_b} ")["id"] == b["id"]
    for guess in ("", " ", "x", code_a[:-1], "' OR '1'='1", "%", None):
        assert store.open_study(guess) is None
    raw = (tmp_path / "review.sqlite3").read_bytes() + (tmp_path / "review.sqlite3-wal").read_bytes()
    assert code_a.encode() not in raw  # only its hash is kept
    reader = store.reader(a["id"], "Ann")
    case_b = store.cases(b["id"])[0]
    with pytest.raises(StoreError, match="does not belong"):
        store.record_blind(a["id"], case_b["id"], reader["id"], "mel", 3, False)


def test_hostile_text_is_stored_as_plain_text(tmp_path):
    store = Store(_url(tmp_path))
    study, _ = store.create_study(HOSTILE, [CaseIn(HOSTILE, "ab" * 32, "upload", "mel")], classes=CLASSES)
    reader = store.reader(study["id"], HOSTILE)
    case = store.cases(study["id"])[0]
    read, _ = store.record_blind(study["id"], case["id"], reader["id"], "mel", 2, True)
    assert store.record_final(study["id"], read["id"], final_dx="nv", biopsy=False, changed_by_ai=True,
                              heatmaps=[{"method": "gradcam", "rating": "on an artefact", "artefact": "ink"}],
                              note=HOSTILE, ai_top="nv", ai_probability=0.7)
    rows = store.reads(study["id"])
    assert len(rows) == 1 and rows[0]["reader"] == HOSTILE and rows[0]["note"] == HOSTILE
    assert rows[0]["case_name"] == HOSTILE and store.open_study  # tables intact
    assert store._study_row(study["id"])["name"] == HOSTILE
    with pytest.raises(StoreError, match="Unknown diagnosis"):
        store.record_blind(study["id"], case["id"], reader["id"], HOSTILE, 2, True)
    with pytest.raises(StoreError, match="rating"):
        store.record_final(study["id"], read["id"], final_dx="nv", biopsy=False, changed_by_ai=True,
                           heatmaps=[{"method": "gradcam", "rating": HOSTILE}], note="", ai_top=None,
                           ai_probability=None)


def test_confirms_are_idempotent_and_resume_where_stopped(tmp_path):
    store = Store(_url(tmp_path))
    study, _ = _study(store, n=3)
    sid = study["id"]
    ann = store.reader(sid, "Ann")
    assert store.reader(sid, "Ann")["id"] == ann["id"]
    cases = store.cases(sid)
    assert store.next_case(sid, ann["id"]) == (cases[0], None)
    first, created = store.record_blind(sid, cases[0]["id"], ann["id"], "mel", 4, True)
    again, created2 = store.record_blind(sid, cases[0]["id"], ann["id"], "nv", 1, False)  # second tab
    assert created and not created2 and again["blind_dx"] == "mel"
    case, read = store.next_case(sid, ann["id"])
    assert case["id"] == cases[0]["id"] and read["id"] == first["id"]  # resumes at the reveal
    kw = dict(final_dx="mel", biopsy=True, changed_by_ai=False, heatmaps=[], note="", ai_top="mel",
              ai_probability=0.9, model_versions={"classifier": "v1"})
    assert store.record_final(sid, first["id"], **kw)
    assert not store.record_final(sid, first["id"], **{**kw, "final_dx": "nv"})  # not overwritten
    assert store.reads(sid)[0]["final_dx"] == "mel"
    assert store.next_case(sid, ann["id"])[0]["id"] == cases[1]["id"]
    assert len(store.reads(sid)) == 1


def test_images_are_kept_only_when_chosen(tmp_path):
    store = Store(_url(tmp_path))
    cases = [CaseIn("a.jpg", "cd" * 32, "upload", None, b"thumb", b"IMAGE-BYTES")]
    without, _ = store.create_study("no images", cases, classes=CLASSES)
    with_, _ = store.create_study("images", cases, classes=CLASSES, store_images=True)
    c0, c1 = store.cases(without["id"])[0], store.cases(with_["id"])[0]
    assert c0["has_image"] == 0 and store.case_image(without["id"], c0["id"]) is None
    assert c1["has_image"] == 1 and store.case_image(with_["id"], c1["id"]) == b"IMAGE-BYTES"
    assert store.case_image(without["id"], c1["id"]) is None  # another study's case: nothing


def test_a_withheld_ai_answer_is_not_an_ai_answer(tmp_path):
    """Issue 26.11: "AI alone" counted gated cases as AI answers, and the export did not say."""
    base = dict(final_at="t", heatmaps=[], note="", blind_at="t", blind_confidence=3, blind_biopsy=0,
                final_biopsy=0, changed_by_ai=0, image_sha256="h", case_name="c", position=0, reader="A")
    reads = [{**base, "truth": "mel", "blind_dx": "mel", "final_dx": "mel", "ai_top": "mel", "ai_gated": 0},
             {**base, "truth": "nv", "blind_dx": "nv", "final_dx": "nv", "ai_top": "mel", "ai_gated": 1,
              "ai_gate_reasons": ["blurred"]}]
    acc = accuracy(reads)[-1]
    assert acc["ai"] == 1.0 and acc["ai_n"] == 1 and acc["ai_gated"] == 1
    rows = export_rows(reads, "S")
    assert [r["ai_gated"] for r in rows] == [False, True] and rows[1]["ai_gate_reasons"] == "blurred"
    # and the store keeps the decision
    store = Store(_url(tmp_path))
    study, _ = store.create_study("s", [CaseIn("a.jpg", "ab" * 32, "upload", "nv", None, None)], classes=CLASSES)
    case = store.cases(study["id"])[0]
    reader = store.reader(study["id"], "A")
    read, _ = store.record_blind(study["id"], case["id"], reader["id"], "nv", 3, False)
    assert store.record_final(study["id"], read["id"], final_dx="nv", biopsy=False, changed_by_ai=False, heatmaps=[],
                              note="", ai_top="mel", ai_probability=0.4, ai_gated=True, ai_gate_reasons=["blurred"])
    saved = store.reads(study["id"])[0]
    assert saved["ai_gated"] == 1 and saved["ai_gate_reasons"] == ["blurred"]


def test_statistics_and_export():
    base = dict(final_at="t", heatmaps=[], note="", blind_at="t", blind_confidence=3, blind_biopsy=0,
                final_biopsy=0, changed_by_ai=0, image_sha256="h", case_name="c", position=0,
                classifier_version="v", segmenter_version=None)
    reads = [
        {**base, "reader": "A", "truth": "mel", "blind_dx": "nv", "final_dx": "mel", "ai_top": "mel",
         "heatmaps": [{"method": "gradcam", "rating": "on the lesion", "heat_in_lesion": 0.8, "road": 0.1}]},
        {**base, "reader": "A", "truth": "nv", "blind_dx": "nv", "final_dx": "mel", "ai_top": "mel",
         "heatmaps": [{"method": "gradcam", "rating": "on an artefact", "artefact": "ruler", "heat_in_lesion": 0.2}]},
        {**base, "reader": "B", "truth": "nv", "blind_dx": "nv", "final_dx": "nv", "ai_top": "nv",
         "heatmaps": [{"method": "eigencam", "rating": "uninformative"}]},
        {**base, "reader": "B", "truth": None, "blind_dx": "bcc", "final_dx": "bcc", "ai_top": "bcc"},
        {**base, "reader": "B", "truth": "mel", "blind_dx": "mel", "final_at": None, "final_dx": None},
    ]
    acc = {r["reader"]: r for r in accuracy(reads)}
    assert acc["A"] == {"reader": "A", "n": 2, "before": 0.5, "after": 0.5, "ai": 0.5, "ai_n": 2, "ai_gated": 0,
                        "right_to_wrong": 1, "wrong_to_right": 1}
    assert acc["all readers"]["n"] == 3 and acc["all readers"]["after"] == pytest.approx(2 / 3)
    pc = {r["class"]: r for r in per_class(reads, CLASSES)}
    assert set(pc) == {"mel", "nv"} and pc["nv"]["before"] == 1.0 and pc["nv"]["right_to_wrong"] == 1
    hm = {r["method"]: r for r in heatmap_ratings(reads)}
    assert hm["gradcam"]["rated"] == 2 and hm["gradcam"]["on_artefact"] == 0.5
    assert hm["gradcam"]["artefacts"] == {"ruler": 1} and hm["gradcam"]["heat_in_lesion"] == pytest.approx(0.5)
    assert hm["eigencam"]["on_artefact"] == 0.0
    rows = export_rows(reads, "S")
    assert len(rows) == 5 and rows[0]["heatmap_ratings"] == "on the lesion" and rows[4]["final_dx"] is None


def test_database_url_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("DERMO_REVIEW_DB", raising=False)
    missing = tmp_path / "none.toml"
    assert database_url(missing).startswith("sqlite:///") and database_url(missing).endswith("data/review.sqlite3")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[connections.review]\nurl = "sqlite:////tmp/x.sqlite3"\n')
    assert database_url(secrets) == "sqlite:////tmp/x.sqlite3"
    secrets.write_text("not [ toml")
    assert database_url(secrets).endswith("data/review.sqlite3")
    monkeypatch.setenv("DERMO_REVIEW_DB", "sqlite:////tmp/env.sqlite3")
    assert database_url(secrets) == "sqlite:////tmp/env.sqlite3"


def test_decision_aids_are_chosen_per_study_and_recorded_per_read(tmp_path):
    store = Store(_url(tmp_path))
    both, _ = _study(store)
    assert both["aids"] == ["prediction_set", "similar_cases"]  # the default: both aids at the reveal
    only_set, _ = _study(store, aids=["prediction_set"])
    assert store.study(only_set["id"])["aids"] == ["prediction_set"]
    with pytest.raises(StoreError, match="Unknown decision aid 'oracle'"):
        _study(store, aids=["oracle"])
    sid = only_set["id"]
    ann = store.reader(sid, "Ann")
    case = store.cases(sid)[0]
    read, _ = store.record_blind(sid, case["id"], ann["id"], "nv", 3, False)
    assert store.record_final(sid, read["id"], final_dx="mel", biopsy=True, changed_by_ai=True, heatmaps=[],
                              note="", ai_top="mel", ai_probability=0.7, aids_seen=["prediction_set@90%"])
    row = store.reads(sid)[0]
    assert row["aids_seen"] == ["prediction_set@90%"]
    assert export_rows([row], "S")[0]["aids_seen"] == "prediction_set@90%"


def test_a_version_1_database_is_migrated_and_keeps_its_reads(tmp_path):
    from sqlalchemy import create_engine, text

    from review.schema import MIGRATIONS

    url = _url(tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:  # a database as the first release of the review page wrote it
        conn.execute(text("CREATE TABLE schema_info (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"))
        for statement in MIGRATIONS[1]("sqlite"):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO schema_info VALUES (1, 'then')"))
        conn.execute(text("INSERT INTO studies VALUES ('s1', 'Old', 'h', 'then', 0, 0, '[\"mel\", \"nv\"]', 'v1', "
                          "NULL)"))
    engine.dispose()
    store = Store(url)
    assert store.version == LATEST >= 2
    old = store.study("s1")
    assert old["name"] == "Old" and old["aids"] == []  # made before aids existed: it showed none


def test_a_plain_file_path_names_an_sqlite_database(tmp_path, monkeypatch):
    """DERMO_REVIEW_DB=/path/review.sqlite3 was refused with "Could not parse SQLAlchemy URL"."""
    target = tmp_path / "sub dir" / "review.sqlite3"
    target.parent.mkdir()
    monkeypatch.setenv("DERMO_REVIEW_DB", str(target))
    url = database_url()
    assert url == f"sqlite:///{target.resolve()}"
    Store(url)
    assert target.is_file()
    monkeypatch.setenv("DERMO_REVIEW_DB", "sqlite:////elsewhere/x.sqlite3")
    assert database_url() == "sqlite:////elsewhere/x.sqlite3"
