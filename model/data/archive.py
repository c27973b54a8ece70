"""Read images out of an uploaded .zip entirely in memory, refusing what could hurt.

Nothing is extracted to disk, so member names (absolute paths, `..`) can never write anywhere;
they are only shown. Zip bombs are stopped by limits on member count, per-member and total
uncompressed size and compression ratio, checked while reading, not only from the headers.
Nested archives are skipped with a note.
"""
from __future__ import annotations

import io
import posixpath
import zipfile

from model.data.dataset import IMAGE_SUFFIXES

MAX_MEMBERS = 1000
MAX_MEMBER_BYTES = 50 * 2**20
MAX_TOTAL_BYTES = 500 * 2**20
MAX_RATIO = 200  # uncompressed / compressed size beyond which a member is treated as a bomb
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz")


class ArchiveError(ValueError):
    """The upload is not a usable zip archive; the message says why."""


def read_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read a member in 1 MB chunks, stopping as soon as it passes `limit` (headers can lie)."""
    parts, size = [], 0
    with zf.open(info) as f:
        while chunk := f.read(2**20):
            size += len(chunk)
            if size > limit:
                raise ArchiveError("member too large")
            parts.append(chunk)
    return b"".join(parts)


def read_image_archive(data: bytes) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(name, bytes) of each image in the zip, and (name, reason) for everything skipped."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"Not a readable .zip file ({e}).") from None
    images, skipped = [], []
    total = 0
    members = [i for i in zf.infolist() if not i.is_dir()]
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"The archive holds {len(members)} files; at most {MAX_MEMBERS} are accepted.")
    with zf:
        for info in members:
            name = info.filename
            shown = posixpath.basename(name.replace("\\", "/")) or name
            lower = name.lower()
            if lower.endswith(ARCHIVE_SUFFIXES):
                skipped.append((shown, "nested archive not opened"))
                continue
            if not lower.endswith(IMAGE_SUFFIXES) or posixpath.basename(lower).startswith("._"):
                skipped.append((shown, "not an image file"))
                continue
            if info.flag_bits & 0x1:
                skipped.append((shown, "encrypted"))
                continue
            if info.file_size > MAX_MEMBER_BYTES or (info.compress_size and info.file_size / info.compress_size > MAX_RATIO):
                skipped.append((shown, "too large when uncompressed (possible zip bomb)"))
                continue
            if total + info.file_size > MAX_TOTAL_BYTES:
                skipped.append((shown, f"archive total exceeds {MAX_TOTAL_BYTES // 2**20} MB"))
                continue
            try:
                content = read_limited(zf, info, min(MAX_MEMBER_BYTES, MAX_TOTAL_BYTES - total))
            except ArchiveError:
                skipped.append((shown, "too large when uncompressed (possible zip bomb)"))
                continue
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as e:
                skipped.append((shown, f"unreadable ({e})"))
                continue
            total += len(content)
            images.append((shown, content))
    return images, skipped
