"""Small real galleries for index tests: copies of Luma-tiny photos, and every kind of troublesome file."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import LUMA_TINY

TINY_JPEGS = sorted(LUMA_TINY.glob("img/*/*/*/*.jpg"))


def copy_some(dst: Path, n: int, start: int = 0, step: int = 7) -> list[str]:
    rels = []
    for src in TINY_JPEGS[start::step][:n]:
        rel = src.relative_to(LUMA_TINY).as_posix()
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst / rel)
        rels.append(rel)
    return rels


def bomb_png(path: Path, side: int = 20000) -> None:
    """A 1-bit greyscale PNG of side x side pixels, a few tens of kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + side // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_bad_gallery(root: Path) -> dict[str, str]:
    """Good copies plus every kind of troublesome file; returns {relative path: 'skip' | 'ok'}."""
    copy_some(root, 6)
    photo = Image.open(TINY_JPEGS[0]).convert("RGB")
    big = photo.resize((300, 400))
    expect = {}
    bad = root / "bad"
    bad.mkdir()
    good_bytes = TINY_JPEGS[1].read_bytes()
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    (bad / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is a text file renamed to .jpg\n")
    bomb_png(bad / "bomb.png")
    photo.resize((5, 5)).save(bad / "tiny5.png")
    expect.update({f"bad/{n}": "skip" for n in ("corrupt.jpg", "truncated.jpg", "empty.jpg", "notes.jpg", "bomb.png",
                                                 "tiny5.png")})
    odd = root / "odd"
    odd.mkdir()
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(odd / "rgba.png")
    photo.convert("CMYK").save(odd / "cmyk.jpg")
    Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257)).save(odd / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 300x400, shown 400x300
    big.save(odd / "exif_rotated.jpg", exif=exif, quality=90)
    expect.update({f"odd/{n}": "ok" for n in ("rgba.png", "cmyk.jpg", "grey16.png", "exif_rotated.jpg")})
    (root / "readme.txt").write_text("not an image extension: ignored, not reported")
    outside = root.parent / "outside.jpg"  # a real image, but not the gallery's: an index would serve it
    shutil.copy(TINY_JPEGS[2], outside)
    (bad / "link-out.jpg").symlink_to(outside)
    (bad / "loop-a.jpg").symlink_to(bad / "loop-b.jpg")
    (bad / "loop-b.jpg").symlink_to(bad / "loop-a.jpg")
    (bad / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (bad / "folder.jpg").mkdir()
    links = ("link-out.jpg", "loop-a.jpg", "loop-b.jpg", "dangling.jpg", "folder.jpg")
    expect.update({f"bad/{n}": "skip" for n in links})
    return expect


def assert_same_encodings(a, b) -> None:
    """Two builds of one gallery encode alike: their 4-bit codes agree but where a float16 token fell on a rounding
    edge (one step apart there), so nearly every coarse number is equal and none is more than a step away."""
    assert [it["path"] for it in a.items] == [it["path"] for it in b.items]
    assert np.mean(a.global_.codes == b.global_.codes) > 0.999 and np.mean(a.parts.codes == b.parts.codes) > 0.999
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=2e-2)
    assert np.mean(np.abs(np.asarray(a.embeddings) - np.asarray(b.embeddings)) < 1e-6) > 0.999
