"""Hostile labels and metadata tables: the labels file of Batch review and the metadata of all three
data layouts. Any bytes in, a parsed table or a DatasetError naming the line out, nothing else;
in the app a bad labels file is a plain error under the image results, never a traceback."""
from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app_fixtures import SMALL, app_models_dir, make_app, no_exception, texts  # noqa: F401
from model.data.dataset import load_dataset
from model.data.tables import DatasetError, parse_labels_table
from model.data.tables import ONE_HOT_COLUMNS

ONE_HOT_HEADER = "image," + ",".join(ONE_HOT_COLUMNS)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# name -> (file bytes, words the message must contain)
BAD_LABELS = {
    "not text (a JPEG)": ((SMALL / "images" / "ISIC_0024436.jpg").read_bytes(), "line 1"),
    "binary with NUL bytes": (b"image_id,dx\nISIC_1,nv\n\x00\x01\x02garbage", "line 3"),
    "latin-1, not UTF-8": ("image_id,dx\nISIC_1,nv\nISIC_2,k\xe9ratose\n".encode("latin-1"), "line 3"),
    "row without a diagnosis": (b"lesion_id,image_id,dx\nL1,ISIC_1,nv\nL2,ISIC_2,\n", "line 3"),
    "short row": (b"lesion_id,image_id,dx\nL1,ISIC_1,nv\nL2,ISIC_2\n", "line 3"),
    "row without an image id": (b"image_id,dx\nISIC_1,nv\n,mel\n", "line 3"),
    "one-hot with a non-numeric cell": (f"{ONE_HOT_HEADER}\nISIC_1,0,1,0,0,0,0,0\nISIC_2,yes,0,0,0,0,0,0\n".encode(),
                                        "line 3"),
    "one-hot with NaN": (f"{ONE_HOT_HEADER}\nISIC_1,nan,1,0,0,0,0,0\n".encode(), "line 2"),
    "one-hot with infinity": (f"{ONE_HOT_HEADER}\nISIC_1,inf,0,0,0,0,0,0\n".encode(), "line 2"),
    "one-hot with no class marked": (f"{ONE_HOT_HEADER}\nISIC_1,0,0,0,0,0,0,0\n".encode(), "line 2"),
    "one-hot with two classes marked": (f"{ONE_HOT_HEADER}\nISIC_1,1,1,0,0,0,0,0\n".encode(), "line 2"),
    "one image, two labels": (b"image_id,dx\nISIC_1,nv\nISIC_2,bcc\nISIC_1,mel\n", "line 4"),
    "a field over the csv limit": (b"image_id,dx\nISIC_1,\"" + b"x" * 200_000 + b"\"\n", "line 2"),
    "header only": (b"image_id,dx\n", "no rows"),
    "empty": (b"", "empty"),
    "unknown columns": (b"a,b\n1,2\n", "Unrecognised"),
}


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


# ----------------------------------------------------------------------------- the labels parser
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_file_names_the_line_and_the_problem(case):
    data, words = BAD_LABELS[case]
    with pytest.raises(DatasetError) as e:
        parse_labels_table(data, name="labels.csv")
    message = str(e.value)
    assert words.lower() in message.lower(), message
    assert "Traceback" not in message and len(message) < 600


def test_good_labels_files_in_the_forms_spreadsheets_write():
    expected = {"ISIC_1": "mel", "ISIC_2": "nv"}
    meta = "lesion_id,image_id,dx\r\nL1, ISIC_1 ,MEL\r\nL2,ISIC_2,nv\r\n\r\n"
    assert parse_labels_table(meta.encode("utf-8-sig")) == expected        # Excel: BOM, CRLF, blank line
    assert parse_labels_table(meta.replace(",", ";").encode()) == expected   # a semicolon locale
    assert parse_labels_table(meta.replace(",", "\t").encode("utf-16")) == expected  # "Unicode text"
    assert parse_labels_table(meta.replace("\r\n", "\r")) == expected       # old Mac line ends, as str
    one_hot = f"{ONE_HOT_HEADER}\nISIC_1,1.0,0.0,0,0,0,0,0\nISIC_2,0,1,,,,,\nISIC_1,1,0,0,0,0,0,0\n"
    assert parse_labels_table(one_hot.encode()) == expected                # empty cells are 0, repeats agree


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_labels_any_bytes(data):
    _parsed_or_refused(data)


CELLS = st.one_of(st.sampled_from(["", "nv", "MEL", "1", "0", "1.0", "nan", "-inf", "1e308", "ISIC_1", "ISIC_2",
                                   '"', '""', "a,b", "\r", "\n", "\x00", "é", "=1+1", " "]),
                  st.text(max_size=8))
HEADERS = st.sampled_from([["image_id", "dx"], ["lesion_id", "image_id", "dx"], ["image", *ONE_HOT_COLUMNS],
                           ["image", "MEL"], ["x"], []])


@FUZZ
@given(HEADERS, st.lists(st.lists(CELLS, max_size=9), max_size=6), st.sampled_from([",", ";", "\t"]))
def test_fuzz_labels_csv_shaped(header, rows, delimiter):
    text = delimiter.join(header) + "\n" + "\n".join(delimiter.join(r) for r in rows)
    _parsed_or_refused(text.encode())
    _parsed_or_refused(_csv([header, *rows]))


def _parsed_or_refused(data: bytes) -> None:
    try:
        labels = parse_labels_table(data)
    except DatasetError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert labels and all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in labels.items())


# ----------------------------------------------------------------------------- the three data layouts
def _layout(root: Path, kind: str, table: bytes) -> None:
    """One of the three layouts with `table` as its metadata (one real image beside it)."""
    image = sorted((SMALL / "images").glob("*.jpg"))[0]
    if kind == "images+masks+metadata":
        (root / "images").mkdir()
        shutil.copy(image, root / "images")
        (root / "metadata.csv").write_bytes(table)
    elif kind == "ham10000-original":
        (root / "HAM10000_images_part_1").mkdir()
        shutil.copy(image, root / "HAM10000_images_part_1")
        (root / "HAM10000_metadata.csv").write_bytes(table)
    else:
        shutil.copy(image, root)
        (root / "ISIC2018_Task3_Training_GroundTruth.csv").write_bytes(table)
        (root / "ISIC2018_Task3_Training_LesionGroupings.csv").write_bytes(table)


LAYOUTS = ["images+masks+metadata", "ham10000-original", "isic2018-groundtruth"]


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("case", ["not text (a JPEG)", "row without a diagnosis", "one-hot with a non-numeric cell",
                                  "a field over the csv limit", "empty"])
def test_bad_metadata_in_every_layout_is_a_dataset_error(kind, case):
    with tempfile.TemporaryDirectory() as tmp:
        _layout(Path(tmp), kind, BAD_LABELS[case][0])
        with pytest.raises(DatasetError) as e:
            load_dataset(tmp)
        assert ".csv" in str(e.value), str(e.value)  # names the file


@pytest.mark.parametrize("kind", LAYOUTS)
@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.builds(
    lambda h, rows: _csv([h, *rows]), HEADERS, st.lists(st.lists(CELLS, max_size=9), max_size=4))))
def test_fuzz_metadata_of_every_layout(kind, data):
    with tempfile.TemporaryDirectory() as tmp:
        _layout(Path(tmp), kind, data)
        try:
            ds = load_dataset(tmp)
        except DatasetError as e:
            assert str(e)
            return
        assert all(r.label and r.image_id for r in ds.records)


def test_bad_split_file_is_a_dataset_error(tmp_path):
    from model.data.dataset import read_split

    for text in ("{not json", "[]", '{"splits": 3}', '{"splits": {"train": 5}}', "\x00\xff"):
        (tmp_path / "split.json").write_text(text, encoding="latin-1")
        with pytest.raises(DatasetError, match="split"):
            read_split(tmp_path / "split.json")


# ----------------------------------------------------------------------------- in the app
def _images(n: int = 2):
    return [(p.name, p.read_bytes(), "image/jpeg") for p in sorted((SMALL / "images").glob("*.jpg"))[:n]]


@pytest.mark.parametrize("case", ["not text (a JPEG)", "row without a diagnosis", "one-hot with a non-numeric cell"])
def test_batch_page_shows_the_bad_line_under_the_results(make_app, case):
    data, words = BAD_LABELS[case]
    at = make_app(page="batch/page.py")
    at.file_uploader(key="batch_files").set_value(_images(2))
    at.file_uploader(key="batch_labels").set_value(("labels*[x](http://example.invalid).csv", data, "text/csv")).run()
    no_exception(at)
    assert len(at.dataframe(key="batch_table").value) == 2          # the image results still show
    assert len(at.error) == 1 and "labels file cannot be used" in at.error[0].value
    assert words in at.error[0].value and "](http" not in at.error[0].value  # markup in the name stays text
    assert "image results above" in texts(at)
