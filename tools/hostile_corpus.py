"""Make the hostile-input corpus that `tools.hostile_replay` drives through the CLI and the app:

    python -m tools.hostile_corpus OUT_DIR [--quick]

Every kind is made here from nothing (PIL, numpy, zipfile; seeded, so the same files each time)
and listed in OUT_DIR/manifest.json: its name, what it is, and where it goes:
- `cli`: a path (or paths) given to `python -m model.cli.predict`;
- `upload`: files uploaded on the Analyse page (one image) or Batch review (images and zips);
- `labels`: a labels table uploaded on Batch review beside two good images.
Image, name and zip kinds go to both the CLI and the app; file-system kinds (devices, FIFOs,
sparse giants, links) only to the CLI. `--quick` leaves out the three largest files (the 3,000-file
zip, the near-limit zip and the 1M-row labels table) for a fast check.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

SEED = 27


def lesion(rng: np.random.Generator, w: int = 300, h: int = 225) -> Image.Image:
    """A plausible dermoscopy-like picture: skin tone, a brown blob, a dark vignette."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = ((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2
    img = np.empty((h, w, 3), np.float32)
    img[...] = (225, 170, 150)
    blob = np.clip(1.2 - d, 0, 1)[..., None]
    img = img * (1 - blob) + np.array((110, 70, 50), np.float32) * blob
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_dims(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels over almost no data (a pixel-count bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        png_chunk(b"IEND", b"")


def text_chunk_bomb(good_png: bytes) -> bytes:
    """A real PNG with a 64 MB zTXt chunk that deflates from about 64 KB."""
    body = good_png[8:]
    ztxt = b"Comment\0\0" + zlib.compress(b"A" * (64 * 2**20), 9)
    return b"\x89PNG\r\n\x1a\n" + body[:25] + png_chunk(b"zTXt", ztxt) + body[25:]


def zip_bytes(members: list[tuple[str, bytes]], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        for name, data in members:   # a fixed time stamp: the same corpus byte for byte
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data, compress_type=compress)
    return buf.getvalue()


def encrypted_zip(data: bytes) -> bytes:
    """A zip whose one member claims to be encrypted (flag bit 0), as a password-protected one does."""
    raw = bytearray(zip_bytes([("secret.jpg", data)], zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(sig)
        raw[at + off] |= 1
    return bytes(raw)


def image_kinds(rng: np.random.Generator) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, what it is): single files for the CLI and the Analyse page."""
    good = lesion(rng)
    jpg, png = encode(good, "JPEG", quality=90), encode(good, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    page2 = lesion(rng, 200, 150)
    kinds = {
        "good-jpeg": ("good.jpg", jpg, "an ordinary lesion JPEG (the control)"),
        "zero-bytes": ("empty.jpg", b"", "an empty file"),
        "text-as-jpeg": ("notes.jpg", b"just some text, not an image\n" * 20, "text named .jpg"),
        "html-as-png": ("page.png", b"<html><script>alert(1)</script></html>", "HTML with script named .png"),
        "truncated-jpeg": ("truncated.jpg", jpg[: len(jpg) // 2], "the first half of a JPEG"),
        "jpeg-header-only": ("header.jpg", jpg[:20], "a JPEG's first 20 bytes"),
        "png-named-jpg": ("png-inside.jpg", png, "a PNG with a .jpg name"),
        "jpeg-named-png": ("jpeg-inside.png", jpg, "a JPEG with a .png name"),
        "one-pixel": ("one.png", encode(Image.new("RGB", (1, 1), (120, 80, 60)), "PNG"), "a 1x1 image"),
        "tiny-8px": ("tiny.jpg", encode(good.resize((8, 6)), "JPEG"), "an 8x6 image"),
        "pixel-bomb-header": ("bomb.png", png_with_dims(60000, 60000), "PNG header claiming 60000x60000"),
        "decompression-bomb": ("huge.png", encode(Image.new("L", (12000, 12000)), "PNG", optimize=True),
                               "a real 12000x12000 PNG (144 Mpx, a few hundred KB)"),
        "grayscale": ("gray.jpg", encode(good.convert("L"), "JPEG"), "grayscale JPEG"),
        "16-bit-png": ("deep.png", encode(Image.fromarray((np.asarray(good.convert("L"), np.uint16) * 257)), "PNG"),
                       "16-bit grayscale PNG"),
        "cmyk-jpeg": ("cmyk.jpg", encode(good.convert("CMYK"), "JPEG"), "CMYK JPEG"),
        "rgba-png": ("alpha.png", encode(good.convert("RGBA"), "PNG"), "PNG with an alpha channel"),
        "palette-png": ("palette.png", encode(good.convert("P"), "PNG"), "palette PNG"),
        "progressive-jpeg": ("progressive.jpg", encode(good, "JPEG", progressive=True), "progressive JPEG"),
        "exif-rotated": ("rotated.jpg", encode(good, "JPEG", exif=exif), "JPEG with EXIF orientation 6"),
        "multipage-tiff": ("pages.tif", encode(good, "TIFF", save_all=True, append_images=[page2]), "two-page TIFF"),
        "float-tiff": ("float.tif", encode(Image.fromarray(np.asarray(good.convert("L"), np.float32)), "TIFF"),
                       "32-bit float TIFF"),
        "bmp": ("plain.bmp", encode(good, "BMP"), "BMP"),
        "webp": ("plain.webp", encode(good, "WEBP"), "WebP"),
        "webp-alpha": ("alpha.webp", encode(good.convert("RGBA"), "WEBP", lossless=True), "lossless WebP with alpha"),
        "png-text-bomb": ("textbomb.png", text_chunk_bomb(png), "PNG with a 64 MB compressed text chunk"),
        "svg-as-png": ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                       "SVG with script named .png"),
        "jpeg-zip-polyglot": ("polyglot.jpg", jpg + zip_bytes([("x.txt", b"hi")]), "a JPEG with a zip appended"),
        "all-black": ("black.jpg", encode(Image.new("RGB", (300, 225)), "JPEG"), "an all-black image"),
        "all-white": ("white.jpg", encode(Image.new("RGB", (300, 225), (255, 255, 255)), "JPEG"), "all white"),
        "noise": ("noise.png", encode(Image.fromarray(rng.integers(0, 256, (225, 300, 3), np.uint8)), "PNG"),
                  "uniform noise"),
        "extreme-aspect": ("strip.jpg", encode(good.resize((4000, 10)), "JPEG"), "a 4000x10 strip"),
        "bad-png-crc": ("crc.png", png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "a PNG with a broken checksum"),
    }
    return kinds


NAME_KINDS = {
    "newline-name": ("line\nforged.jpg: error: fake.jpg", "a newline forging an error line"),
    "rlo-name": ("evil\u202egpj.jpg", "a right-to-left override (U+202E)"),
    "formula-hyperlink": ('=HYPERLINK("http:__evil","z").jpg', "a spreadsheet formula"),
    "formula-cmd": ("=cmd|' _C calc'!A0.jpg", "a DDE command formula"),
    "formula-plus": ("+cmd.jpg", "a leading plus"),
    "formula-minus": ("-2+3.jpg", "a leading minus"),
    "formula-at": ("@SUM(1).jpg", "a leading at-sign"),
    "long-name": ("L" * 240 + ".jpg", "a 244-character name"),
    "html-name": ('<img src=x onerror="alert(1)">.jpg', "HTML in the name"),
    "markdown-name": ("**bold** [link](javascript:alert(1)).jpg", "markdown and a javascript: link"),
    "nfd-name": ("Mu\u0308ller e\u0301.jpg", "decomposed Unicode"),
}


def zip_kinds(rng: np.random.Generator, quick: bool) -> dict[str, tuple[str, Callable[[], bytes], str]]:
    jpg = encode(lesion(rng), "JPEG", quality=90)
    kinds = {
        "zip-empty": ("empty.zip", lambda: zip_bytes([]), "an empty zip"),
        "zip-only-folders": ("folders.zip", lambda: zip_bytes([("a/", b""), ("a/b/", b"")]), "folders only"),
        "zip-bomb": ("bomb.zip", lambda: zip_bytes([("zeros.jpg", b"\0" * (300 * 2**20))]),
                     "one member of 300 MB of zeros, deflated to about 300 KB"),
        "zip-encrypted": ("locked.zip", lambda: encrypted_zip(jpg), "a member flagged as encrypted"),
        "zip-nested": ("nested.zip", lambda: zip_bytes([("inner.zip", zip_bytes([("x.jpg", jpg)])), ("ok.jpg", jpg)]),
                       "a zip inside a zip"),
        "zip-traversal": ("traversal.zip", lambda: zip_bytes([("../../etc/passwd.jpg", jpg), ("/tmp/abs.jpg", jpg)]),
                          "member names with .. and absolute paths"),
        "zip-long-member": ("long.zip", lambda: zip_bytes([("d/" + "x" * 300 + ".jpg", jpg), ("ok.jpg", jpg)]),
                            "a 304-character member name"),
        "zip-duplicates": ("dups.zip", lambda: zip_bytes([("a/dup.jpg", jpg), ("b/dup.jpg", jpg), ("dup.jpg", jpg)]),
                           "three members named dup.jpg"),
        "zip-rlo-member": ("rlo.zip", lambda: zip_bytes([("evil\u202egpj.jpg", jpg)]), "U+202E in a member name"),
        "zip-truncated": ("cut.zip", lambda: zip_bytes([("a.jpg", jpg), ("b.jpg", jpg)])[:-30],
                          "a zip missing its central directory's end"),
        "zip-text-members": ("text.zip", lambda: zip_bytes([("a.jpg", b"not an image"), ("ok.jpg", jpg)]),
                             "a member that is text named .jpg"),
        "zip-macos-junk": ("mac.zip", lambda: zip_bytes([("__MACOSX/._ok.jpg", b"\0\5\26\7"), ("ok.jpg", jpg)]),
                           "macOS resource forks beside an image"),
        "zip-deep": ("deep.zip", lambda: zip_bytes([("/".join(["d"] * 100) + "/ok.jpg", jpg)]),
                     "an image 100 folders deep"),
        "zip-not-a-zip": ("fake.zip", lambda: b"PK\x03\x04 this is not really a zip", "zip magic then garbage"),
    }
    if not quick:
        kinds["zip-3000-files"] = ("many.zip", lambda: zip_bytes([(f"img{k:04d}.jpg", jpg) for k in range(3000)]),
                                   "3,000 small images (over the 1,000-member limit)")
        kinds["zip-near-limit"] = ("big.zip", lambda: near_limit_zip(rng), "about 48 MB of images (near the 50 MB "
                                                                             "upload limit)")
    return kinds


def near_limit_zip(rng: np.random.Generator) -> bytes:
    """Stored (uncompressed) noisy JPEGs adding up to about 48 MB."""
    big = encode(Image.fromarray(rng.integers(0, 256, (900, 1200, 3), np.uint8)), "JPEG", quality=95)
    n = (48 * 2**20) // len(big)
    return zip_bytes([(f"big{k:03d}.jpg", big) for k in range(n)], zipfile.ZIP_STORED)


def labels_kinds(quick: bool) -> dict[str, tuple[str, Callable[[], bytes], str]]:
    kinds = {
        "labels-utf16": ("utf16.csv", lambda: "image_id,dx\ngood,nv\n".encode("utf-16"), "UTF-16 with a BOM"),
        "labels-binary": ("binary.csv", lambda: bytes(range(256)) * 64, "binary bytes"),
        "labels-formulas": ("formulas.csv", lambda: b'image_id,dx\n=HYPERLINK("x"),nv\n@SUM(1),mel\n', "formula cells"),
        "labels-no-columns": ("cols.csv", lambda: b"a,b\n1,2\n", "no image or diagnosis column"),
        "labels-conflicting": ("conflict.csv", lambda: b"image_id,dx\ngood,nv\ngood,mel\n", "one image, two labels"),
        "labels-semicolon": ("semi.csv", lambda: b"image_id;dx\ngood;nv\n", "semicolon-separated"),
        "labels-one-long-line": ("line.csv", lambda: b"image_id,dx\n" + b"x" * (20 * 2**20) + b",nv\n",
                                 "a 20 MB single cell"),
    }
    if not quick:
        kinds["labels-1m-rows"] = ("million.csv", lambda: b"lesion_id,image_id,dx,dx_type,age,sex,localization\n" +
                                   b"".join(b"HAM_%07d,ISIC_%07d,nv,histo,45.0,male,back\n" % (k, k)
                                            for k in range(1_000_000)), "1M rows, 47 MB")
    return kinds


def filesystem_kinds(root: Path, jpg: bytes) -> dict[str, tuple[list[str], str]]:
    """CLI-only kinds: made on disk, given as paths."""
    fs = root / "fs"
    fs.mkdir()
    out: dict[str, tuple[list[str], str]] = {}

    def folder(name: str) -> Path:
        p = fs / name
        p.mkdir()
        return p

    (fs / "zero.jpg").symlink_to("/dev/zero")
    out["symlink-dev-zero"] = ([str(fs / "zero.jpg")], "a symlink to /dev/zero")
    os.mkfifo(fs / "pipe.jpg")
    out["fifo"] = ([str(fs / "pipe.jpg")], "a named pipe")
    sparse = folder("sparse")
    (sparse / "a.jpg").write_bytes(jpg)
    (sparse / "b.jpg").write_bytes(jpg)
    with open(sparse / "huge.tif", "wb") as f:
        f.truncate(6 * 2**30)
    out["sparse-6gb-tif"] = ([str(sparse)], "a 6 GB sparse .tif beside two good JPEGs")
    only_zips = folder("only-zips")
    (only_zips / "one.zip").write_bytes(zip_bytes([("x.jpg", jpg)]))
    (only_zips / "two.zip").write_bytes(zip_bytes([]))
    out["folder-of-zips"] = ([str(only_zips)], "a folder holding only zips")
    (fs / "dangling.jpg").symlink_to(fs / "nowhere.jpg")
    out["dangling-symlink"] = ([str(fs / "dangling.jpg")], "a symlink to nothing")
    loop = folder("loop")
    (loop / "self").symlink_to(loop)
    (loop / "ok.jpg").write_bytes(jpg)
    out["symlink-loop"] = ([str(loop)], "a folder linking to itself")
    (fs / "dir.jpg").mkdir()
    out["folder-named-jpg"] = ([str(fs / "dir.jpg")], "an empty folder named .jpg")
    folder("empty")
    out["empty-folder"] = ([str(fs / "empty")], "an empty folder")
    locked = fs / "locked.jpg"
    locked.write_bytes(jpg)
    locked.chmod(0)
    out["unreadable-file"] = ([str(locked)], "a file without read permission (root reads it anyway)")
    out["missing-path"] = ([str(fs / "does-not-exist.jpg")], "a path that does not exist")
    return out


def build(root: Path, quick: bool = False) -> list[dict]:
    """Write every kind under `root`; returns the manifest rows (also written to manifest.json)."""
    rng = np.random.default_rng(SEED)
    root.mkdir(parents=True, exist_ok=True)
    files = root / "files"
    files.mkdir(exist_ok=True)
    rows: list[dict] = []
    images = image_kinds(rng)
    for kind, (name, data, what) in images.items():
        sub = files / kind
        sub.mkdir()
        (sub / name).write_bytes(data)
        rows.append({"kind": kind, "what": what, "cli": [str(sub / name)], "upload": [str(sub / name)],
                     "page": "analyse"})
    good = images["good-jpeg"][1]
    for kind, (name, what) in NAME_KINDS.items():
        sub = files / kind
        sub.mkdir()
        (sub / name).write_bytes(good)
        rows.append({"kind": kind, "what": what, "cli": [str(sub / name)], "upload": [str(sub / name)],
                     "page": "batch"})
    for kind, (name, make, what) in zip_kinds(rng, quick).items():
        sub = files / kind
        sub.mkdir()
        (sub / name).write_bytes(make())
        rows.append({"kind": kind, "what": what, "cli": [str(sub / name)], "upload": [str(sub / name)],
                     "page": "batch"})
    pair = files / "labelled"
    pair.mkdir()
    (pair / "good.jpg").write_bytes(good)
    (pair / "other.jpg").write_bytes(good)
    for kind, (name, make, what) in labels_kinds(quick).items():
        sub = files / kind
        sub.mkdir()
        (sub / name).write_bytes(make())
        rows.append({"kind": kind, "what": what, "cli": None, "upload": [str(pair / "good.jpg"), str(pair / "other.jpg")],
                     "labels": str(sub / name), "page": "batch"})
    for kind, (paths, what) in filesystem_kinds(root, good).items():
        rows.append({"kind": kind, "what": what, "cli": paths, "upload": None, "page": None})
    (root / "manifest.json").write_text(json.dumps(rows, indent=1, ensure_ascii=True))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.hostile_corpus", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="an empty or new folder")
    ap.add_argument("--quick", action="store_true", help="leave out the three largest files")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    rows = build(args.out, args.quick)
    print(f"{len(rows)} kinds written to {args.out} (manifest.json lists them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
