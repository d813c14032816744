"""Safe file reading, one door for the index folder and its gallery: a file is opened only if it resolves inside
its folder and what was opened is a regular file (never a FIFO, a device or a link out), and is read whole only
under a size cap; gallery images are told by their names (IMAGE_SUFFIXES) and their signatures (image_type)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

# gallery images: what read_image serves or decodes (extensions as the builder finds them, index_builder.gallery)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF8": "image/gif",
               b"BM": "image/bmp", b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff"}
# read-only; never follow a link at the last component (a path is resolved and checked first, so a link found
# there was swapped in since); never block on a FIFO; not inherited by child processes
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def bad_path(path: Any) -> bool:
    """Whether `path` is not a relative POSIX path that stays below its folder (no '..', not absolute) and names
    a file. On the string, not a PurePosixPath: a million-photo index checks a million paths when it opens."""
    parts = [s for s in path.split("/") if s not in ("", ".")] if isinstance(path, str) else []
    return not parts or path.startswith("/") or ".." in parts or "\\" in path or "\0" in path


def image_type(data: bytes) -> str | None:
    """The media type of an image file's bytes by their signature (JPEG, PNG, GIF, WebP, BMP, TIFF), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for sig, kind in _SIGNATURES.items() if data.startswith(sig)), None)


class _Refused(Exception):
    """Why a file was not opened (a phrase; the caller adds which file)."""


def _open_inside(folder: Path, relative: str) -> tuple[BinaryIO, os.stat_result, Path]:
    """folder / relative (folder resolved), opened for reading if it resolves inside `folder` and what was opened
    is a regular file: (file, its fstat, its resolved path). Checked on the descriptor itself, so a file swapped
    after the check is judged on what was actually opened. Raises _Refused."""
    real = Path(os.path.realpath(folder / relative))
    if not real.is_relative_to(folder):
        raise _Refused("leads outside its folder (a link to elsewhere)")
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise _Refused("missing") from None
    except OSError as exc:  # ELOOP: a link put there since it was resolved
        raise _Refused(f"cannot be opened ({exc.strerror or type(exc).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not a regular file")
        return os.fdopen(fd, "rb"), st, real
    except BaseException:
        os.close(fd)
        raise


def _read_capped(f: BinaryIO, size: int, cap: int) -> bytes | None:
    """The file's bytes, or None if it holds more than `cap` (checked before reading, and again while reading:
    a file may grow)."""
    if size > cap:
        return None
    data = f.read(size + 1)  # not read(cap + 1): that allocates the whole cap up front
    if len(data) > size:  # grew since its size was taken
        data += f.read(cap + 1 - len(data))
    return None if len(data) > cap else data
