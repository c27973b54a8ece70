"""The Review page in AppTest on the tiny bundles: create a study from the bundled examples, open
it with its code, blind read -> reveal -> after read, resume in a new session, teaching mode,
hostile names shown as text, results and export."""
from __future__ import annotations

import pytest

from app_fixtures import app_models_dir, no_exception, texts  # noqa: F401
from review_flow import after, blind, click, create_from_examples, open_study, review_app
from review import Store

pytestmark = pytest.mark.slow


def test_create_read_resume_and_results(app_models_dir, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    at = review_app(app_models_dir, url, monkeypatch)
    code = create_from_examples(at, "Teaching set", teaching=True)
    assert "shown only once" in texts(at)
    at.run()
    assert not at.code, "the access code must not be shown again"

    open_study(at, code, "Dr <b>Who</b> **x**")
    assert "0 of 8 cases finished" in texts(at) or any("0 of 8" in str(p.proto.text) for p in at.get("progress"))
    assert not at.get("plotly_chart"), "the blind read must not show the AI"
    blind(at, "nv", confidence=4, biopsy=True)
    shown = texts(at)
    assert "Where the model looked" in shown and "Truth:" in shown  # reveal + teaching mode
    assert "Decision aids" in shown  # the study's aids (both by default) at the reveal
    # the outline and the feature maps run only once their expander is opened (the reveal does not wait)
    assert "Lesion found by the segmentation model" not in [i.proto.imgs[0].caption for i in at.image]
    outline = next(k for k in at.session_state.keys() if str(k).startswith("rv_outline_"))
    at.session_state[outline] = True
    at.run()
    assert "Lesion found by the segmentation model" in [i.proto.imgs[0].caption for i in at.image]
    after(at, "mel", rating="on an artefact", artefact="ruler", note="=HYPERLINK(\"x\")")
    blind(at, "unsure")

    # a new session (closed browser) continues at the reveal of case 2
    at2 = review_app(app_models_dir, url, monkeypatch)
    at2.radio(key="review_mode").set_value("Open a study").run()
    open_study(at2, code, "Dr <b>Who</b> **x**")
    assert "Where the model looked" in texts(at2) and "1 of 8" in str([p.proto.text for p in at2.get("progress")])
    after(at2, "bcc")

    store = Store(url)
    study = store.open_study(code)
    reads = store.reads(study["id"])
    assert [(r["blind_dx"], r["final_dx"]) for r in reads] == [("nv", "mel"), ("unsure", "bcc")]
    assert reads[0]["reader"] == "Dr <b>Who</b> **x**" and reads[0]["note"] == '=HYPERLINK("x")'
    assert reads[0]["heatmaps"][0]["rating"] == "on an artefact" and reads[0]["heatmaps"][0]["artefact"] == "ruler"
    assert reads[0]["ai_top"] and reads[0]["classifier_version"] and reads[0]["blind_biopsy"] == 1
    assert reads[0]["aids_seen"] == ["prediction_set@90%", "similar_cases"]  # what this reader was shown
    assert reads[0]["heatmaps"][0]["road"] is not None  # faithfulness measured and kept with the rating

    next(r for r in at2.radio if r.label == "Show").set_value("Progress and results").run()
    no_exception(at2)
    assert len(at2.get("plotly_chart")) >= 3
    assert {d.label for d in at2.get("download_button")} >= {"Download every read (CSV)", "Download every read (JSON)"}


def test_wrong_code_shows_nothing(app_models_dir, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    at = review_app(app_models_dir, url, monkeypatch)
    create_from_examples(at, "Secret study")
    at.run()
    open_study(at, "not-the-code", "Eve")
    shown = texts(at)
    assert "No study has this access code" in shown and "Secret study" not in shown
    assert not at.image


def _zip(files) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files:
            zf.writestr(f"cases/{name}", data)
        zf.writestr("cases/notes.txt", "not an image")
    return buf.getvalue()


@pytest.mark.parametrize("keep_images", [False, True])
def test_uploads_zip_and_hostile_labels(app_models_dir, tmp_path, monkeypatch, keep_images):
    """A study from a .zip and a labels file with a hostile row; without stored images the reader
    is asked for the files again (matched by content), with them the case opens directly."""
    from app_fixtures import SMALL

    imgs = sorted((SMALL / "images").glob("*.jpg"))[:3]
    rows = ["image_id,dx"] + [f"{p.stem},{'nv' if i else '<img src=x onerror=alert(1)>'}" for i, p in enumerate(imgs)]
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    at = review_app(app_models_dir, url, monkeypatch)
    at.radio(key="review_mode").set_value("Create a study").run()
    at.text_input(key="rc_name").set_value("Zip study")
    at.file_uploader(key="rc_files").set_value(("cases.zip", _zip([(p.name, p.read_bytes()) for p in imgs]),
                                                "application/zip"))
    at.file_uploader(key="rc_labels").set_value(("labels.csv", "\n".join(rows).encode(), "text/csv"))
    if keep_images:
        at.checkbox(key="rc_keep").check()
    click(at, "Create study")
    no_exception(at)
    code = at.code[0].value.strip()
    skipped = next(e for e in at.expander if "skipped" in e.label).dataframe[0].value.set_index("file")["reason"]
    assert "is not a class of this model" in skipped[imgs[0].name] and "cases.zip: notes.txt" in skipped.index
    store = Store(url)
    study = store.open_study(code)
    cases = store.cases(study["id"])
    assert [c["truth"] for c in cases] == [None, "nv", "nv"]  # the hostile label is not a class: dropped
    assert all(c["has_image"] == int(keep_images) for c in cases)

    at.run()
    open_study(at, code, "Reader")
    if not keep_images:
        assert "is not stored in the study" in texts(at)
        at.file_uploader(key="review_resupply").set_value(
            [(p.name, p.read_bytes(), "image/jpeg") for p in reversed(imgs)]).run()
        no_exception(at)
    blind(at, "bkl")
    assert "Where the model looked" in texts(at)


def test_a_second_tab_is_told_its_answer_was_not_kept(app_models_dir, tmp_path, monkeypatch):
    """Two tabs of one reader on the same case, one after the other (the parallel version with exact
    counts is in test_review_load): the later confirm keeps the first answer and says so."""
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    tab_a = review_app(app_models_dir, url, monkeypatch)
    code = create_from_examples(tab_a)
    tab_a.run()
    tab_a.radio(key="review_mode").set_value("Open a study").run()
    open_study(tab_a, code, "Ann")
    tab_b = review_app(app_models_dir, url, monkeypatch)
    tab_b.radio(key="review_mode").set_value("Open a study").run()
    open_study(tab_b, code, "Ann")
    blind(tab_a, "mel")
    assert "not saved" not in texts(tab_a)  # the tab that confirmed first gets no notice
    blind(tab_b, "nv")  # its form still showed case 1
    assert "first answer is kept" in texts(tab_b) and "Melanoma" in texts(tab_b)
    after(tab_a, "mel")
    assert "not saved" not in texts(tab_a)
    after(tab_b, "nv")  # tab B's reveal of case 1: tab A finished it already
    assert "after read was not saved" in texts(tab_b)
    reads = Store(url).reads(Store(url).open_study(code)["id"])
    assert [(r["blind_dx"], r["final_dx"]) for r in reads] == [("mel", "mel")]


def test_wrong_codes_wait_longer_and_are_logged_without_the_code(app_models_dir, tmp_path, monkeypatch, caplog):
    """Issue 27.8: 50 wrong codes in a row each got the same answer in half a second.
    Issue 27.9: the database's location showed to every visitor before any code."""
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    at = review_app(app_models_dir, url, monkeypatch)
    assert str(tmp_path) not in texts(at)            # a visitor: no location
    create_from_examples(at, "Guarded")
    assert str(tmp_path) in texts(at)                # the organiser, once, beside the new code
    at.run()
    with caplog.at_level("WARNING", logger="review.access"):
        for k in range(4):
            open_study(at, f"wrong-{k}", "Eve")
    shown = texts(at)
    assert "Too many wrong access codes: wait 1 s" in shown and "The code was not checked" in shown
    logged = [r.getMessage() for r in caplog.records if r.name == "review.access"]
    assert len(logged) == 3 and not any("wrong-" in m for m in logged)
    assert str(tmp_path) not in shown


def test_the_limiter_grows_per_session_and_over_the_server():
    from app.studies.access import MAX_WAIT_S, SERVER_FREE, AccessLimiter
    now = [0.0]
    limiter = AccessLimiter(clock=lambda: now[0])
    a: dict = {}
    waits = []
    for _ in range(10):
        limiter.failed(a, "a")
        waits.append(limiter.wait(a))
    assert waits[:2] == [0, 0] and waits[2:6] == [1, 2, 4, 8] and max(waits) <= MAX_WAIT_S
    limiter.succeeded(a)
    b: dict = {}
    for k in range(SERVER_FREE + 10):          # many fresh sessions, one wrong code each
        limiter.failed({}, f"s{k}")
    assert limiter.wait(b) > 0                 # a new session waits too
    now[0] += 601
    assert limiter.wait(b) == 0                # the window has passed
