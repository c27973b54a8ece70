"""The CSV tables that carry labels: HAM10000 metadata, ISIC 2018 GroundTruth (one-hot) and
LesionGroupings, and a labels file uploaded to Batch review.

Any bytes in, parsed rows out or a `DatasetError` whose message names the file, the line and the
problem, and says what to do. Nothing else escapes (no csv.Error, UnicodeDecodeError, KeyError).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

ONE_HOT_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
MAX_TABLE_BYTES = 100 * 2**20
EXPECTED = ("HAM10000 metadata (columns image_id, dx) or an ISIC 2018 GroundTruth.csv "
            "(columns image, MEL, NV, BCC, AKIEC, BKL, DF, VASC)")


class DatasetError(ValueError):
    """A data folder or table we cannot read; the message says what was expected."""


@dataclass
class Table:
    """A CSV table: stripped column names and (line number, {column: stripped cell}) per row."""
    name: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


def _text(data: bytes, name: str) -> str:
    if len(data) > MAX_TABLE_BYTES:
        raise DatasetError(f"{name} is larger than {MAX_TABLE_BYTES // 2**20} MB; a labels table is "
                           "far smaller. Check that you chose the right file.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DatasetError(f"{name} starts like UTF-16 text but is not. Save it as "
                               "'CSV UTF-8' and try again.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DatasetError(f"{name}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; it may not "
                           "be a CSV file at all. Save the table as 'CSV UTF-8' and try again.") from None


def _delimiter(first_line: str) -> str:
    """Comma, or the semicolon / tab some spreadsheet locales write, whichever the header uses."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_table(data: bytes | str, name: str = "The labels file", keep=None) -> Table:
    """Parse CSV bytes (UTF-8, optional BOM; UTF-16 with BOM) or text into a Table. `keep(columns)`:
    the columns whose cells are kept (all when None), so a wide table costs only what is used."""
    text = _text(bytes(data), name) if isinstance(data, (bytes, bytearray)) else str(data).lstrip("\ufeff")
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DatasetError(f"{name}, line {line}: contains binary data (a NUL character), so it is not a CSV "
                           "text file. Upload the .csv table itself.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n", 1)[0]))
    columns: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for fields in reader:
            cells = [f.strip() for f in fields]
            if not any(cells):
                continue
            if columns is None:
                columns = [c.lstrip("\ufeff").strip() for c in cells]
                wanted = set(keep(columns)) if keep is not None else set(columns)
                kept = [(k, c) for k, c in enumerate(columns) if c in wanted]
                continue
            cells += [""] * (len(columns) - len(cells))
            rows.append((reader.line_num, {c: cells[k] for k, c in kept}))
    except csv.Error as e:
        raise DatasetError(f"{name}, line {reader.line_num}: not valid CSV ({e}). Fix or remove that line and "
                           "try again.") from None
    if columns is None:
        raise DatasetError(f"{name} is empty: it has no header row. Expected {EXPECTED}.")
    if not rows:
        raise DatasetError(f"{name} has a header but no rows of labels.")
    return Table(name, columns, rows)


def read_table_file(path: Path) -> Table:
    """read_table on a file; unreadable files become a DatasetError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"Cannot read {path} ({e.strerror or e}).") from None
    return read_table(data, Path(path).name)


def _require(table: Table, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DatasetError(f"{table.name} has no column {', '.join(missing)} (its columns: "
                           f"{', '.join(table.columns[:12]) or 'none'}).")


def _first(seen: dict[str, tuple[int, str]], table: Table, line: int, image: str, value: str) -> bool:
    """True the first time an image appears; a repeat with another label is an error."""
    if image in seen:
        if seen[image][1] != value:
            raise DatasetError(f"{table.name}, line {line}: {image} is labelled {value!r} here but "
                               f"{seen[image][1]!r} on line {seen[image][0]}. Keep one row per image.")
        return False
    seen[image] = (line, value)
    return True


def metadata_rows(table: Table) -> list[tuple[int, str, str, str]]:
    """(line, image_id, dx lower-cased, lesion_id or image_id) of HAM10000-style metadata."""
    _require(table, ("image_id", "dx"))
    seen: dict[str, tuple[int, str]] = {}
    out = []
    for line, row in table.rows:
        image, dx = row["image_id"], row["dx"].lower()
        if not image:
            raise DatasetError(f"{table.name}, line {line}: the row has no image_id. Fill it in or delete the row.")
        if not dx:
            raise DatasetError(f"{table.name}, line {line}: {image} has no diagnosis (dx). Fill it in or "
                               "delete the row.")
        if _first(seen, table, line, image, dx):
            out.append((line, image, dx, row.get("lesion_id") or image))
    return out


def _one_hot_label(table: Table, line: int, row: dict[str, str]) -> str:
    scores = {}
    for c in ONE_HOT_COLUMNS:
        cell = row[c] or "0"
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DatasetError(f"{table.name}, line {line}: column {c} holds {cell[:40]!r}, not a number. "
                               "Each class column must be 0 or 1.")
        scores[c] = value
    top = max(scores.values())
    marked = [c for c, v in scores.items() if v == top]
    if top <= 0:
        raise DatasetError(f"{table.name}, line {line}: {row['image']} has no class marked (all class "
                           "columns are 0). Mark its diagnosis with 1 or delete the row.")
    if len(marked) > 1:
        raise DatasetError(f"{table.name}, line {line}: {row['image']} marks {' and '.join(marked)} equally. "
                           "Mark one diagnosis per image.")
    return marked[0].lower()


def one_hot_rows(table: Table) -> list[tuple[int, str, str]]:
    """(line, image, class code) of an ISIC 2018 one-hot GroundTruth table."""
    _require(table, ("image",) + ONE_HOT_COLUMNS)
    seen: dict[str, tuple[int, str]] = {}
    out = []
    for line, row in table.rows:
        if not row["image"]:
            raise DatasetError(f"{table.name}, line {line}: the row has no image name. Fill it in or delete the row.")
        label = _one_hot_label(table, line, row)
        if _first(seen, table, line, row["image"], label):
            out.append((line, row["image"], label))
    return out


def lesion_groups(table: Table) -> dict[str, str]:
    """image -> lesion_id of an ISIC 2018 LesionGroupings table (rows without a lesion id are left out)."""
    _require(table, ("image", "lesion_id"))
    return {row["image"]: row["lesion_id"] for _, row in table.rows if row["image"] and row["lesion_id"]}


def label_columns(columns) -> tuple[str, ...]:
    """The columns a labels table is read for: image and diagnosis, nothing else."""
    if {"image_id", "dx"} <= set(columns):
        return ("image_id", "dx")
    return ("image",) + ONE_HOT_COLUMNS


MIN_LABEL_ROWS = 50_000   # any labels table up to this many rows is read (ISIC 2019 has 25,331)
ROWS_PER_IMAGE = 20       # beyond that, at most this many rows per image to label


def check_label_rows(data: bytes, images: int, name: str = "The labels file") -> None:
    """Refuse, before parsing, a table with far more rows than the images it is to label."""
    rows = data.count(b"\n")
    limit = max(MIN_LABEL_ROWS, ROWS_PER_IMAGE * images)
    if rows > limit:
        raise DatasetError(f"{name} has about {rows:,} rows for {images:,} image{'s' if images != 1 else ''}: "
                           f"far more than a labels table for this upload needs (at most {limit:,} rows are "
                           "read). Upload the labels of these images, or the dataset's own metadata.csv.")


def parse_labels_table(data: bytes | str, name: str = "The labels file", images: int | None = None) -> dict[str, str]:
    """image id -> class code from HAM10000 metadata (image_id, dx) or an ISIC one-hot GroundTruth.
    `images`: how many images the labels are for; a table with far more rows is refused unread."""
    if images is not None and isinstance(data, (bytes, bytearray)):
        check_label_rows(bytes(data), images, name)
    table = read_table(data, name, keep=label_columns)
    if {"image_id", "dx"} <= set(table.columns):
        return {image: dx for _, image, dx, _ in metadata_rows(table)}
    if {"image", *ONE_HOT_COLUMNS} <= set(table.columns):
        return {image: label for _, image, label in one_hot_rows(table)}
    raise DatasetError(f"Unrecognised labels file: expected {EXPECTED}; {name} has columns "
                       f"{', '.join(table.columns[:12])}.")
