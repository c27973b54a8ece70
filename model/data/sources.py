"""Image files to predict, streamed one at a time from folders, zip archives and single files.

Only names are listed up front (to count them for a progress bar); each file's bytes are read
when its turn comes, so memory does not grow with the number of images. A zip is read member by
member from disk with the upload reader's per-member guards (size, compression ratio, encryption,
nested archives), but without its limits on member count and total size: archives of 30k images
are the point here.
"""
from __future__ import annotations

import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from model.data.archive import ARCHIVE_SUFFIXES, MAX_MEMBER_BYTES, MAX_RATIO, ArchiveError, read_limited
from model.data.dataset import IMAGE_SUFFIXES


@dataclass
class Item:
    name: str                  # what the output calls the image: a path, or a zip member's name
    data: bytes | None = None  # None when `error` says why the file could not be read
    error: str | None = None

    @property
    def image_id(self) -> str:
        """The file name without folders and extension (ISIC_0024306), as ISIC files name images."""
        return posixpath.splitext(posixpath.basename(self.name.replace("\\", "/")))[0]


def _is_image(name: str) -> bool:
    base = posixpath.basename(name.replace("\\", "/")).lower()
    return base.endswith(IMAGE_SUFFIXES) and not base.startswith("._")


class Sources:
    """`len()` is the number of images found; iterating yields an Item per image, in a stable
    order (folders sorted, zip members as stored, files as given)."""

    def __init__(self, inputs: Sequence[str | Path]):
        self._plan: list[tuple[str, Path, object]] = []  # (kind, path, listing)
        self.problems: list[Item] = []  # inputs that could not be opened at all
        for raw in inputs:
            path = Path(raw)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p.name))
                self._plan.append(("dir", path, files))
            elif path.suffix.lower() == ".zip":
                try:
                    with zipfile.ZipFile(path) as zf:
                        members = [i.filename for i in zf.infolist() if not i.is_dir()
                                   and (_is_image(i.filename) or i.filename.lower().endswith(ARCHIVE_SUFFIXES))]
                except (OSError, zipfile.BadZipFile) as e:
                    self.problems.append(Item(str(path), error=f"not a readable zip archive ({e})"))
                    continue
                self._plan.append(("zip", path, members))
            else:
                self._plan.append(("file", path, [path]))

    def __len__(self) -> int:
        return len(self.problems) + sum(len(listing) for _, _, listing in self._plan)

    def __iter__(self) -> Iterator[Item]:
        yield from self.problems
        for kind, path, listing in self._plan:
            if kind == "zip":
                yield from _zip_items(path, listing)
            else:
                for p in listing:
                    yield _file_item(p)


def _file_item(path: Path) -> Item:
    try:
        return Item(str(path), path.read_bytes())
    except OSError as e:
        return Item(str(path), error=f"cannot read file ({e.strerror or e})")


def _zip_items(path: Path, members: list[str]) -> Iterator[Item]:
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
