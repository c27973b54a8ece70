"""Image files to predict, streamed one at a time from folders, zip archives and single files.

Only names are listed up front (to count them for a progress bar); each file's bytes are read
when its turn comes, so memory does not grow with the number of images. Only regular files are
read (never a device, FIFO or socket, whatever a symbolic link points at), each under the app's
per-file limit. A zip, given directly or found in a folder (one level: zips inside zips are not
opened), is read member by member from disk with the upload reader's per-member guards (size,
compression ratio, encryption, nested archives), but without its limits on member count and
total size: archives of 30k images are the point here.
"""
from __future__ import annotations

import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from model.data.archive import ARCHIVE_SUFFIXES, MAX_MEMBER_BYTES, MAX_RATIO, ArchiveError, read_limited
from model.data.dataset import IMAGE_SUFFIXES
from model.files import clean_name

MAX_FILE_BYTES = MAX_MEMBER_BYTES   # the app's upload limit per file (.streamlit/config.toml)


@dataclass
class Item:
    name: str                  # what the output calls the image: a path, or a zip member's name
    data: bytes | None = None  # None when `error` says why the file could not be read
    error: str | None = None

    @property
    def shown(self) -> str:
        """The name as shown and written: bidirectional and control characters removed."""
        return clean_name(self.name)

    @property
    def image_id(self) -> str:
        """The file name without folders and extension (ISIC_0024306), as ISIC files name images."""
        return posixpath.splitext(posixpath.basename(self.shown.replace("\\", "/")))[0]


@dataclass
class Found:
    """What the inputs held, for the line that says so."""
    folders: int = 0
    zips: int = 0
    files: int = 0
    ignored: list[str] = field(default_factory=list)   # files that are neither images nor zips

    def summary(self, images: int) -> str:
        where = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in
                 ((self.folders, "folder"), (self.zips, "zip archive"), (self.files, "file")) if n]
        text = f"found {images} image{'s' if images != 1 else ''} in {', '.join(where) or 'no input'}"
        if self.ignored:
            text += f"; {len(self.ignored)} other file{'s' if len(self.ignored) != 1 else ''} ignored (not images)"
        return text


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name.replace("\\", "/")).lower()
    return base.endswith(IMAGE_SUFFIXES) and not base.startswith("._")


def regular_file_problem(path: Path) -> str | None:
    """Why `path` is not read (not a regular file, or over the size limit); None when it may be."""
    try:
        st = os.stat(path)   # follows links: a link to /dev/zero is a character device here
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        return f"not read: {kind}; only regular image files are read"
    if st.st_size > MAX_FILE_BYTES and path.suffix.lower() != ".zip":
        return (f"not read: {st.st_size / 2**20:,.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit per image "
                "(the app's upload limit)")
    return None


class Sources:
    """`len()` is the number of images found; iterating yields an Item per image, in a stable
    order (folders sorted, zip members as stored, files as given)."""

    def __init__(self, inputs: Sequence[str | Path]):
        self._plan: list[tuple[str, Path, list]] = []  # (kind, path, listing)
        self.problems: list[Item] = []  # inputs that could not be opened at all
        self.found = Found()
        for raw in inputs:
            path = Path(raw)
            if path.is_dir():
                self._add_folder(path)
            elif path.suffix.lower() == ".zip":
                self._add_zip(path)
            else:
                self.found.files += 1
                self._plan.append(("file", path, [path]))

    def _add_folder(self, path: Path) -> None:
        self.found.folders += 1
        files, zips = [], []
        for p in sorted(path.rglob("*")):
            if p.is_dir():
                continue
            if is_image_name(p.name):
                files.append(p)
            elif p.suffix.lower() == ".zip":
                zips.append(p)
            elif not p.name.startswith("."):
                self.found.ignored.append(str(p))
        self._plan.append(("dir", path, files))
        for z in zips:
            self._add_zip(z)

    def _add_zip(self, path: Path) -> None:
        self.found.zips += 1
        problem = regular_file_problem(path)
        if problem is not None:
            self.problems.append(Item(str(path), error=problem))
            return
        try:
            with zipfile.ZipFile(path) as zf:
                members = [i.filename for i in zf.infolist() if not i.is_dir()
                           and (is_image_name(i.filename) or i.filename.lower().endswith(ARCHIVE_SUFFIXES))]
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            self.problems.append(Item(str(path), error=f"not a readable zip archive ({e})"))
            return
        self._plan.append(("zip", path, members))

    def __len__(self) -> int:
        return len(self.problems) + sum(len(listing) for _, _, listing in self._plan)

    def summary(self) -> str:
        return self.found.summary(sum(is_image_name(str(n)) for _, _, listing in self._plan for n in listing))

    def __iter__(self) -> Iterator[Item]:
        yield from self.problems
        for kind, path, listing in self._plan:
            if kind == "zip":
                yield from zip_items(path, listing)
            else:
                for p in listing:
                    yield file_item(p)


def file_item(path: Path) -> Item:
    """The file's bytes, or why they were not read (checked before opening: a FIFO would hang)."""
    problem = regular_file_problem(path)
    if problem is not None:
        return Item(str(path), error=problem)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        return Item(str(path), error=f"cannot read file ({e.strerror or e})")
    if len(data) > MAX_FILE_BYTES:   # grew since it was checked
        return Item(str(path), error=f"not read: over the {MAX_FILE_BYTES // 2**20} MB limit per image")
    return Item(str(path), data)


def zip_items(path: Path, members: list[str]) -> Iterator[Item]:
    with zipfile.ZipFile(path) as zf:
        for name in members:
            info = zf.getinfo(name)
            lower = name.lower()
            if lower.endswith(ARCHIVE_SUFFIXES):
                yield Item(name, error="nested archive not opened")
            elif info.flag_bits & 0x1:
                yield Item(name, error="encrypted")
            elif info.file_size > MAX_MEMBER_BYTES or (info.compress_size and info.file_size / info.compress_size > MAX_RATIO):
                yield Item(name, error="too large when uncompressed (possible zip bomb)")
            else:
                try:
                    yield Item(name, read_limited(zf, info, MAX_MEMBER_BYTES))
                except ArchiveError:
                    yield Item(name, error="too large when uncompressed (possible zip bomb)")
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as e:
                    yield Item(name, error=f"unreadable ({e})")
