"""The index folder: its format (one home for the file names and what they hold) and its reader, `GalleryIndex`,
which opens a folder written by `python -m index_builder` and checks every file (coarse search: mga.coarse).

Everything read from the folder is validated before use: a damaged or hand-edited index gives an IndexFormatError
that names the file and what is wrong, never a traceback from numpy or FAISS, nor silent nonsense. Every file is
opened only if it is a regular file inside its folder (never a FIFO, a device or a link out), arrays are checked
on their headers before a byte of them is loaded, and the manifest and the items have size caps.

Gallery images are served and decoded through one door, `GalleryIndex.read_image`, which checks the file it
opened on every call: inside its gallery root (a thumbnail: inside the index folder), a regular file, named and
shaped like an image, not too large; anything else is a GalleryFileError that names the image by its number and
gallery path only.
"""
from __future__ import annotations

import gc
import json
import math
import os
import shlex
import stat
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Sequence

import numpy as np
import torch

from .coarse import CoarseSearch, rows_float
from .config import MAX_IMAGE_BYTES
from .data import category_key
from .files import temp_folders
from .model import Encoding, coarse_embedding
from .views import FULL_BOX, ZoomViews

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
FAISS_FILE = "index.faiss"  # HNSW or IVF-PQ; a flat (exact) index is rebuilt from the tokens at load
EMBEDDINGS = "embeddings.npy"  # formats 1-2 only: float32 (N, E) coarse embeddings (format 3 rebuilds them)
GLOBAL = "global.npy"  # (N, G) float16, or format 3's coded form: uint8 (N, bytes) codes (CODECS) of its groups
PARTS = "parts.npy"  # (N, K, D) float16, or format 3's coded form: uint8 (N, K, bytes) codes of each part token
ATTN = "attn.npy"  # formats 1-2: float16 (N, K, h, w) part attention maps (format 3 keeps none: see EvenMaps)
GLOBAL_SCALE = "global_scale.npy"  # float16 (N, S): the coded global tokens' scales, one per row and group
PARTS_SCALE = "parts_scale.npy"  # float16 (N, K): the coded part tokens' scales, one per row and part
OWNER = "owner.npy"  # whole numbers (N,): the image (line of items.jsonl) of each row; rows of one image adjacent
BOXES = "boxes.npy"  # float32 (N, 4): where each row's view lies in its image, (x0, y0, x1, y1) as fractions
SKIPPED = "skipped.txt"
# 2: rows are views (mga.views: full photo + zoom windows), owner.npy and boxes.npy. 3: what search needs once:
# no coarse embeddings (rebuilt from the tokens, mga.model.coarse_embedding), tokens float16 or coded (int8 /
# 4-bit with a float16 scale per vector), no attention maps
FORMAT_VERSION = 3
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
# how format 3 stores the tokens (index_builder --tokens): exactly as format 2 did, or coded (CODECS)
TOKEN_DTYPES = ("float16", "int8", "int4")
DEFAULT_TOKENS = "int4"  # a new index's (float16: format 2's scores exactly, for indexes whose scores are recorded)
# bits per number of each code: int8 and int4 are signed (c * scale, |c| <= 127 or 7), sqrt4 is for groups that
# are never negative (the pretrained anchor's GeM: its values are (c * scale)^2, c in 0..15, finer near 0)
CODECS = {"int8": 8, "int4": 4, "sqrt4": 4}
SCALES = {GLOBAL: GLOBAL_SCALE, PARTS: PARTS_SCALE}
ARRAY_DIMS = {EMBEDDINGS: 2, GLOBAL: 2, PARTS: 3, ATTN: 4, OWNER: 1, BOXES: 2, GLOBAL_SCALE: 2, PARTS_SCALE: 2}
# what each array may hold: float16/32/64 vectors and boxes, uint8 token codes, whole numbers for owner.npy
# (native byte order only: torch reads the memory maps as they are)
ARRAY_KINDS = {EMBEDDINGS: "f", GLOBAL: "fu", PARTS: "fu", ATTN: "f", OWNER: "iu", BOXES: "f", GLOBAL_SCALE: "f",
               PARTS_SCALE: "f"}
CODE_SIZES = {GLOBAL: 1, PARTS: 1}  # token codes are bytes
FLOAT_SIZES = (2, 4, 8)
FINITE_CHECK_ROWS = 65_536  # rows checked for NaN / inf per step (bounded memory on any index size)
# The manifest is read whole at start-up: a few kB, plus its skip report (about 200 bytes per file that could not
# be indexed); 64 MB holds the report of 300k skipped files and still stops a damaged or crafted one (a link to a
# huge file) from filling the memory.
MANIFEST_MAX_BYTES = 64 * 2**20
# items.jsonl is read whole as well: about 300 bytes per image as built, more with long CSV metadata. Its cap
# grows with the index (views, from the arrays' headers, whose sizes are checked against their files; every
# image has at least one view), so that no honest index reaches it.
ITEMS_BASE_BYTES = 64 * 2**20
ITEMS_BYTES_PER_VIEW = 64 * 2**10
# gallery images: what read_image serves or decodes (extensions as the builder finds them, index_builder.gallery)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF8": "image/gif",
               b"BM": "image/bmp", b"II*\x00": "image/tiff", b"MM\x00*": "image/tiff"}
# read-only; never follow a link at the last component (a path is resolved and checked first, so a link found
# there was swapped in since); never block on a FIFO; not inherited by child processes
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class IndexMismatchError(RuntimeError):
    """The index was built with other weights than the model searching it: its vectors mean nothing here."""


class IndexFormatError(RuntimeError):
    """The folder is not an MGA index, or a damaged one: the message names the file and what is wrong."""


class GalleryFileError(LookupError):
    """A gallery image (or its thumbnail) that cannot be served: missing, outside its folder, not a regular file,
    not an image. The message names the image by its number and gallery path, never by a path of the server."""


def rebuild_command(manifest: dict, index_dir: str | Path, weights: str | Path | None) -> str:
    """The exact command that rebuilds this index with `weights`."""
    src = manifest.get("source") or {}
    cmd = ["python", "-m", "index_builder", "--gallery", str(src.get("gallery") or "GALLERY_DIR"),
           "--out", str(index_dir)]
    if src.get("csv"):
        cmd += ["--csv", str(src["csv"])]
    if weights:
        cmd += ["--weights", str(weights)]
    tokens = (manifest.get("tokens") or {}).get("dtype") if isinstance(manifest.get("tokens"), dict) else None
    if tokens in TOKEN_DTYPES and tokens != DEFAULT_TOKENS:
        cmd += ["--tokens", tokens]
    return shlex.join(cmd)


def bad_path(path: Any) -> bool:
    """Whether `path` is not a relative POSIX path that stays below its folder (no '..', not absolute) and names
    a file. On the string, not a PurePosixPath: a million-photo index checks a million paths when it opens."""
    parts = [s for s in path.split("/") if s not in ("", ".")] if isinstance(path, str) else []
    return not parts or path.startswith("/") or ".." in parts or "\\" in path or "\0" in path


def items_max_bytes(views: int) -> int:
    """The most an index of `views` views may hold in items.jsonl (the builder checks what it writes against it)."""
    return ITEMS_BASE_BYTES + ITEMS_BYTES_PER_VIEW * views


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


def _read_index_file(folder: Path, path: Path, name: str, cap: int) -> bytes | None:
    """A small file of the index folder (manifest, items) read whole, or None if it is missing."""
    try:
        f, st, _ = _open_inside(folder, name)
    except _Refused as why:
        if str(why) == "missing":
            return None
        raise IndexFormatError(f"{path / name}: {why}; an index holds regular files only") from None
    with f:
        try:
            data = _read_capped(f, st.st_size, cap)
        except OSError as exc:
            raise IndexFormatError(f"{path / name}: unreadable ({exc.strerror or exc})") from None
    if data is None:
        raise IndexFormatError(f"{path / name}: more than the {cap / 2**20:,.0f} MB an index's {name} may hold; "
                               f"damaged, or not an index's file")
    return data


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise IndexFormatError(f"{where}: {what}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _optional(x: Any, kind: type | tuple[type, ...]) -> bool:
    return x is None or isinstance(x, kind)


def _check_manifest(man: str, manifest: dict) -> None:
    """Every field a reader uses has the type it expects, so that a hand-edited manifest stops the start here,
    naming the field, and never becomes a traceback in the middle of a search."""
    for key in ("model", "source", "faiss", "counts", "build", "arrays"):
        _check(isinstance(manifest.get(key, {}), dict), man, f"{key} must be an object")
    _check(_optional(manifest.get("zoom"), dict), man, "zoom must be an object")
    for key in ("skipped", "categories", "roots"):
        _check(isinstance(manifest.get(key, []), list), man, f"{key} must be a list")
    for key in ("built_at", "created_by"):
        _check(isinstance(manifest.get(key, ""), str), man, f"{key} must be a string")
    model = manifest.get("model", {})
    _check(isinstance(model.get("fingerprint", ""), str), man, "model.fingerprint must be a string")
    _check(_optional(model.get("weights"), str), man, "model.weights must be a string")
    _check(isinstance(model.get("config", {}), dict), man, "model.config must be an object")
    source = manifest.get("source", {})
    for key in ("gallery", "csv", "kind", "shard"):
        _check(_optional(source.get(key), str), man, f"source.{key} must be a string")
    faiss = manifest.get("faiss", {})
    _check(faiss.get("type", "flat") in INDEX_TYPES, man, f"faiss.type must be one of {INDEX_TYPES}")
    for key in ("ef_search", "nprobe", "refine"):
        value = faiss.get(key, 1)
        _check(_is_int(value) and value >= 1, man, f"faiss.{key} {value!r:.50} must be a whole number >= 1")
    zoom = manifest.get("zoom") or {}
    unknown = set(zoom) - {"grid", "scale", "min_cover"}
    _check(not unknown, man, f"zoom has unknown fields {sorted(unknown)}")
    _check(_is_int(zoom.get("grid", 0)) and zoom.get("grid", 0) >= 0, man, "zoom.grid must be a whole number >= 0")
    for key in ("scale", "min_cover"):
        _check(_is_number(zoom.get(key, 0)), man, f"zoom.{key} must be a number")
    for key in ("tokens", "coarse", "maps"):
        _check(isinstance(manifest.get(key, {}), dict), man, f"{key} must be an object")
    for key in ("global", "parts"):
        groups = manifest.get("tokens", {}).get(key)
        _check(groups is None or isinstance(groups, list) and 1 <= len(groups) <= 64 and all(
            isinstance(g, list) and len(g) == 2 and g[0] in CODECS and _is_int(g[1]) and g[1] >= 1
            and g[1] * CODECS[g[0]] % 8 == 0 for g in groups), man,
            f"tokens.{key} must list 1 to 64 [codec, width] groups, codecs of {sorted(CODECS)}, whole bytes each")
    if manifest.get("format_version", 1) >= 3:  # its coarse embeddings are rebuilt from the tokens with this
        weight = manifest.get("coarse", {}).get("global_weight")
        _check(_is_number(weight) and 0 < weight <= 1, man, f"coarse.global_weight {weight!r:.50} must be a "
               f"number in (0, 1] (the global token's share of the coarse embedding)")
        maps = manifest.get("maps", {})
        _check(isinstance(maps, dict) and (maps.get("shape") is None or isinstance(maps["shape"], list)
                                           and len(maps["shape"]) == 3
                                           and all(_is_int(x) and 1 <= x <= 4096 for x in maps["shape"])),
               man, "maps.shape must list 3 whole numbers (parts, height, width)")
    counts = manifest.get("counts", {})
    _check(all(_is_int(v) for v in counts.values()), man, "counts must hold whole numbers")
    _check(all(isinstance(s, dict) for s in manifest.get("skipped", [])), man, "skipped must list objects")
    for i, root in enumerate(manifest.get("roots", [])):
        _check(isinstance(root, dict), man, "roots must be a list of objects")
        for key in ("relative", "absolute"):
            _check(_optional(root.get(key), str), man, f"root {i}: {key} must be a string")


def _read_manifest(path: Path, folder: Path) -> dict:
    man = path / MANIFEST
    data = _read_index_file(folder, path, MANIFEST, MANIFEST_MAX_BYTES)
    if data is None:
        unfinished = temp_folders(path) if path.parent.exists() else []
        hint = f" (an unfinished build is in {unfinished[-1].name}; finish it with --resume)" if unfinished else ""
        raise IndexFormatError(f"{path}: no {MANIFEST}; not an MGA index folder{hint}. "
                               f"Build one with: python -m index_builder --gallery GALLERY_DIR --out {path}")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{man}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{man}: must hold a JSON object")
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise IndexFormatError(f"{man}: format_version {version!r:.50} " + (
            f"is newer than this code reads ({FORMAT_VERSION}); update the code or rebuild the index" if newer
            else f"is not a format this code reads (1 to {FORMAT_VERSION})"))
    _check_manifest(str(man), manifest)
    return manifest


def _read_items(path: Path, folder: Path, n_roots: int, cap: int) -> list[dict]:
    """items.jsonl, each line checked: a relative path inside its root, an existing root, no path twice, and the
    fields a search shows of the types it expects."""
    file = path / ITEMS
    data = _read_index_file(folder, path, ITEMS, cap)
    if data is None:
        raise IndexFormatError(f"{file}: missing; rebuild the index")
    try:
        lines = [(n, line) for n, line in enumerate(data.decode("utf-8").splitlines(), 1) if line.strip()]
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{file}: unreadable ({exc})") from None
    del data
    with _no_gc():  # a million small dicts: the collector would walk them again and again while they are made
        items = _parse_lines(file, lines)
        seen: set = set()
        for (number, _), item in zip(lines, items):
            fault = _item_fault(item, n_roots)
            if fault is None:
                key = (item.get("root", 0), item["path"])
                fault = f"{key[1]!r} is listed twice" if key in seen else None
                seen.add(key)
            if fault is not None:  # said with its line only now: a million lines are checked
                raise IndexFormatError(f"{file}, line {number}: {fault}")
    return items


@contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _parse_lines(file: Path, lines: list[tuple[int, str]]) -> list[Any]:
    """The lines' JSON values: parsed as one array (a third faster than line by line, and the objects share
    their keys: 40% less memory at a million lines), or, when that fails or does not give one value per line,
    line by line, for the line at fault."""
    try:
        values = json.loads("[" + ",".join(line for _, line in lines) + "]")
        if isinstance(values, list) and len(values) == len(lines):
            return values
    except (json.JSONDecodeError, RecursionError):
        pass
    values = []
    for number, line in lines:
        try:
            values.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise IndexFormatError(f"{file}, line {number}: not JSON ({str(exc)[:200]})") from None
    raise IndexFormatError(f"{file}: not one JSON value per line")


def _item_fault(item: Any, n_roots: int) -> str | None:
    """What is wrong with one item, if anything: the fields a search reads must be of the types it expects, its
    path relative and inside an existing root."""
    if not isinstance(item, dict):
        return "must be a JSON object"
    root = item.get("root", 0)
    if not _is_int(root) or not 0 <= root < n_roots:
        return f"root {root!r:.50} is not one of the manifest's {n_roots} roots"
    for field in ("path", "thumb"):
        if (field == "path" or item.get(field) is not None) and bad_path(item.get(field)):
            return f"{field} {str(item.get(field))[:200]!r} must be relative and stay inside its folder"
    item_id = item.get("item_id", "")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        return "item_id must be a string"
    if not isinstance(item.get("category", ""), str):
        return "category must be a string"
    if not isinstance(item.get("meta", {}), dict):
        return "meta must be an object"
    for side in ("width", "height"):
        if not (item.get(side) is None or _is_int(item[side]) and item[side] >= 0):
            return f"{side} must be a whole number"
    return None


@dataclass
class _Npy:
    """An array file of the index, opened and its header checked; nothing of its data read yet."""

    file: BinaryIO
    where: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def load(self, mmap: bool) -> np.ndarray:
        """The array: a copy-on-write memory map (nothing writes to it, and torch can gather from it in place,
        rows_float, which it only does on writable memory), or read into memory. Closes the file."""
        order = "F" if self.fortran else "C"
        with self.file:
            if self.nbytes == 0:
                return np.zeros(self.shape, self.dtype, order=order)
            try:
                if mmap:
                    return np.memmap(self.file, self.dtype, mode="c", offset=self.offset, shape=self.shape,
                                     order=order)
                buffer = bytearray(self.nbytes)
                self.file.seek(self.offset)
                if self.file.readinto(buffer) != self.nbytes:
                    raise IndexFormatError(f"{self.where}: truncated; rebuild the index")
                return np.frombuffer(buffer, self.dtype).reshape(self.shape, order=order)
            except (OSError, ValueError) as exc:
                raise IndexFormatError(f"{self.where}: unreadable ({exc}); rebuild the index") from None


def _open_array(path: Path, folder: Path, name: str) -> _Npy | None:
    """An array file opened and its header checked against the file (its size must be exactly what the header
    declares), its dimensions and its type, before any of it is read; None if it is missing."""
    where = path / name
    try:
        f, st, _ = _open_inside(folder, name)
    except _Refused as why:
        if str(why) == "missing":
            return None
        raise IndexFormatError(f"{where}: {why}; an index holds regular files only") from None
    try:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
            raise IndexFormatError(f"{where}: unreadable or truncated ({str(exc)[:200]}); rebuild the index") \
                from None
        npy = _Npy(f, where, tuple(shape), dtype, fortran, f.tell())
        kinds = ARRAY_KINDS[name]
        if len(shape) != ARRAY_DIMS[name] or dtype.kind not in kinds or not dtype.isnative or dtype.hasobject \
                or (dtype.kind == "f" and dtype.itemsize not in FLOAT_SIZES) \
                or (dtype.kind in "iu" and name in CODE_SIZES and dtype.itemsize != CODE_SIZES[name]):
            raise IndexFormatError(f"{where}: expected a {ARRAY_DIMS[name]}-d array of {_KIND_WORDS[kinds]} "
                                   f"(native byte order), found {len(shape)}-d {dtype}")
        if any(d < 1 for d in shape[1:]):
            raise IndexFormatError(f"{where}: shape {shape} has an empty dimension")
        if st.st_size != npy.offset + npy.nbytes:
            raise IndexFormatError(f"{where}: {st.st_size:,} bytes, but its header declares {shape} {dtype} "
                                   f"({npy.offset + npy.nbytes:,} bytes): truncated or damaged; rebuild the index")
        return npy
    except BaseException:
        f.close()
        raise


_KIND_WORDS = {"f": "floats", "iu": "whole numbers", "fu": "floats or uint8 codes"}


def _check_finite(path: Path, name: str, array: np.ndarray, nonnegative: bool = False) -> None:
    for start in range(0, len(array), FINITE_CHECK_ROWS):
        chunk = np.asarray(array[start:start + FINITE_CHECK_ROWS])
        ok = np.isfinite(chunk) & (chunk >= 0) if nonnegative else np.isfinite(chunk)
        bad = ~ok.reshape(len(chunk), -1).all(1)
        if bad.any():
            raise IndexFormatError(f"{path / name}: row {start + int(np.argmax(bad))} is not finite (NaN or inf)"
                                   + (" or negative" if nonnegative else "") + "; rebuild the index with working "
                                   "weights")


class StoredRows:
    """Rows of format 3 that are not stored as float numbers (coded tokens, coarse embeddings rebuilt from the
    tokens, maps not stored at all), read like an array: `rows(rows)` gives some rows as a float32 tensor (what
    mga.coarse.rows_float gathers), indexing gives float32 numpy arrays, np.asarray the whole (block by block;
    a big index's whole would not fit in memory, as its memory maps do)."""

    dtype = np.dtype(np.float32)
    shape: tuple[int, ...]

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        return self.rows(np.where(rows < 0, rows + len(self), rows).reshape(-1)).numpy().reshape(
            rows.shape + self.shape[1:])

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._take(np.array([int(key)]))[0]
        elif isinstance(key, slice):
            out = self._take(np.arange(len(self))[key])
            rest = (slice(None),) + rest if rest else ()
        else:
            out = self._take(key)
            rest = (slice(None),) * np.ndim(key) + rest if rest else ()
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for s in range(0, len(self), FINITE_CHECK_ROWS):
            out[s:s + FINITE_CHECK_ROWS] = self.rows(np.arange(s, min(len(self), s + FINITE_CHECK_ROWS))).numpy()
        return out if dtype is None else out.astype(dtype, copy=False)


def _gather(array: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).index_select(0, torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)))


def decode(codes: torch.Tensor, scales: torch.Tensor, groups: Sequence[tuple[str, int]]) -> torch.Tensor:
    """Coded vectors (..., bytes) uint8 and their scales (..., S), one per group of `groups` ((codec, width), in
    order) -> the vectors (..., sum of widths) float32. int8 codes are signed bytes; 4-bit ones two to a byte, the
    low nibble first, int4's offset by 8. Written group by group into one tensor, in place."""
    out = torch.empty(codes.shape[:-1] + (sum(w for _, w in groups),))
    at = col = 0
    for g, (codec, width) in enumerate(groups):
        size = width * CODECS[codec] // 8
        src, dst = codes[..., at:at + size], out[..., col:col + width]
        if CODECS[codec] == 8:
            dst.copy_(src.view(torch.int8))
        else:
            pairs = dst.unflatten(-1, (size, 2))
            pairs[..., 0].copy_(src & 15)
            pairs[..., 1].copy_(src >> 4)
            if codec == "int4":
                dst.sub_(8)
        dst.mul_(scales[..., g:g + 1])
        if codec == "sqrt4":
            dst.square_()
        at, col = at + size, col + width
    return out


def coded_bytes(groups: Sequence[tuple[str, int]]) -> int:
    """Bytes of one vector coded in these groups."""
    return sum(width * CODECS[codec] // 8 for codec, width in groups)


class CodedRows(StoredRows):
    """Format 3's coded tokens: codes (N, ..., bytes) uint8 and a scale per row and group (N, ..., S), read as
    float32 vectors (N, ..., sum of the groups' widths)."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, groups: Sequence[tuple[str, int]]):
        self.codes, self.scales, self.groups = codes, scales, tuple((str(c), int(w)) for c, w in groups)
        self.shape = codes.shape[:-1] + (sum(w for _, w in self.groups),)

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        scales = _gather(self.scales, rows)
        return decode(_gather(self.codes, rows), scales if scales.ndim == self.codes.ndim else scales[..., None],
                      self.groups)


class EvenMaps(StoredRows):
    """Part attention maps of format 3, which stores none: their one use for a gallery view (its heatmap,
    SearchEngine.match_maps) encodes that view again and takes its own. Read as even maps (every cell alike, each
    map summing to 1), so that code written for formats 1-2 still runs."""

    def __init__(self, views: int, shape: Sequence[int]):
        self.shape = (views,) + tuple(int(x) for x in shape)

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        k, h, w = self.shape[1:]
        return torch.full((len(rows), k, h, w), 1.0 / (h * w))


class CoarseRows(StoredRows):
    """The coarse embeddings of format 3, rebuilt from the stored tokens (mga.model.coarse_embedding) when read."""

    def __init__(self, global_, parts, global_weight: float):
        self.global_, self.parts, self.global_weight = global_, parts, global_weight
        self.shape = (len(global_), global_.shape[1] + parts.shape[1] * parts.shape[2])

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        return coarse_embedding(rows_float(self.global_, rows), rows_float(self.parts, rows), self.global_weight)


def token_groups(manifest: dict) -> dict[str, tuple[tuple[str, int], ...]]:
    """Format 3's coded tokens: the groups of columns (codec, width) of a global token and of a part token, from
    the manifest's `tokens` (empty for float16 tokens)."""
    tokens = manifest.get("tokens", {})
    return {name: tuple((str(c), int(w)) for c, w in tokens.get(key) or ()) for name, key in ((GLOBAL, "global"),
                                                                                          (PARTS, "parts"))}


def check_fits(index: "GalleryIndex", model, weights: str | Path | None = None) -> None:
    """IndexFormatError unless the index's arrays have the widths `model` (an MGAModel) encodes: global token,
    parts and their width, coarse embedding. An index with the model's fingerprint but other widths is damaged
    or crafted, and every search on it would fail."""
    cfg = model.config
    anchor = getattr(model, "anchor", None)  # the global token is [trained ; anchor GeM] (MGAModel._with_anchor)
    index.check_widths(cfg.embed_dim, cfg.embed_dim + (anchor.num_features if anchor is not None else 0),
                       cfg.num_parts, weights)


class GalleryIndex(CoarseSearch):
    """An index folder opened read-only: manifest, items (one per image), FAISS index and memory-mapped token
    arrays (one row per view: each image's full photo first, then its zoom windows); searched by CoarseSearch."""

    def __init__(self, path: str | Path, mmap: bool = True):
        self.path = Path(path)
        self._folder = self.path.resolve()
        self.manifest: dict = _read_manifest(self.path, self._folder)
        self.roots = [self._resolve_root(i, r) for i, r in enumerate(self.manifest.get("roots", []))]
        self.zoom = ZoomViews.from_dict(self.manifest.get("zoom"))
        self.format_version: int = self.manifest.get("format_version", 1)
        compact = self.format_version >= 3  # no coarse embeddings or maps: rebuilt from the tokens, or not needed
        names = (GLOBAL, PARTS, OWNER, BOXES, GLOBAL_SCALE, PARTS_SCALE) if compact \
            else (EMBEDDINGS, GLOBAL, PARTS, ATTN, OWNER, BOXES)
        required = {GLOBAL, PARTS} | ({OWNER, BOXES} if compact else {EMBEDDINGS, ATTN})
        groups = token_groups(self.manifest)
        # every array's header first: shapes, types and sizes agree before anything is loaded
        files: dict[str, _Npy] = {}
        try:
            for name in names:
                npy = _open_array(self.path, self._folder, name)
                if npy is None and name in required:
                    raise IndexFormatError(f"{self.path / name}: missing; rebuild the index")
                if npy is not None:
                    files[name] = npy
            if (OWNER in files) != (BOXES in files):
                missing = BOXES if OWNER in files else OWNER
                raise IndexFormatError(f"{self.path / missing}: missing; rebuild the index")
            v = files[GLOBAL].shape[0]
            self.items: list[dict] = _read_items(self.path, self._folder, len(self.roots), items_max_bytes(v))
            self._check_headers(files, groups)
            self.global_, self.parts = (
                CodedRows(files.pop(name).load(mmap), files.pop(SCALES[name]).load(mmap), groups[name])
                if files[name].dtype.kind == "u" else files.pop(name).load(mmap) for name in (GLOBAL, PARTS))
            if compact:
                self.embeddings = CoarseRows(self.global_, self.parts, self.manifest["coarse"]["global_weight"])
                self.attn = EvenMaps(v, (self.parts.shape[1],) + tuple(
                    (self.manifest.get("maps", {}).get("shape") or (0, 1, 1))[1:]))
            else:
                self.embeddings, self.attn = files.pop(EMBEDDINGS).load(mmap), files.pop(ATTN).load(mmap)
            n = len(self.items)
            if OWNER in files:
                self.owner = files.pop(OWNER).load(mmap=False).astype(np.int64, copy=False)
                self.boxes = files.pop(BOXES).load(mmap=False)
            else:  # format 1: one full view per image
                self.owner = np.arange(n, dtype=np.int64)
                self.boxes = np.tile(np.array(FULL_BOX, dtype=np.float32), (n, 1))
        finally:
            for npy in files.values():
                npy.file.close()
        # rows of image i: first_row[i] (its full photo) up to first_row[i + 1]; every image has a view
        self.first_row = np.searchsorted(self.owner, np.arange(n + 1))
        if v and (np.any(np.diff(self.owner) < 0) or self.owner[0] != 0 or self.owner[-1] != n - 1) \
                or np.any(np.diff(self.first_row) < 1):
            raise IndexFormatError(f"{self.path / OWNER}: must map views to the {n} images of {ITEMS} in order")
        checked = ((GLOBAL, self.global_), (PARTS, self.parts)) if compact \
            else ((EMBEDDINGS, self.embeddings), (GLOBAL, self.global_))
        for name, arr in checked:  # codes cannot be NaN: their scales are checked
            if isinstance(arr, CodedRows):
                _check_finite(self.path, SCALES[name], arr.scales, nonnegative=True)
            else:
                _check_finite(self.path, name, arr)
        params = self.manifest.get("faiss", {})  # types checked with the manifest
        self.index_type: str = params.get("type", "flat")
        self.faiss = self._open_faiss(mmap)
        self.ef_search: int = params.get("ef_search", 128)
        self.nprobe: int = params.get("nprobe", 32)
        self.refine: int = params.get("refine", 1)  # candidates fetched per result, re-scored exactly
        # one category per spelling ("Pants", "pants"), shown as its most common one
        key_of: dict[str, str] = {}  # a shop has a few categories and many photos
        keys = np.array([key_of.get(c) or key_of.setdefault(c, category_key(c))
                         for c in (str(it.get("category", "")) for it in self.items)])
        spellings = Counter((k, str(it.get("category", ""))) for k, it in zip(keys.tolist(), self.items) if k)
        self._label: dict[str, str] = {}
        for (key, spelling), _ in spellings.most_common():
            self._label.setdefault(key, spelling)
        self.categories = sorted(self._label.values())
        self._by_category = {self._label[key]: np.flatnonzero(keys == key) for key in self._label}
        self.category_keys = keys  # per image: what the category vote counts (mga.category_vote)
        self.item_photos = Counter(str(it.get("item_id", "")) for it in self.items)  # photos per product

    def _check_headers(self, files: dict[str, "_Npy"], groups: dict[str, tuple[tuple[str, int], ...]]) -> None:
        """The arrays' headers against each other: one row per view in every array (one per image of the items
        without owner.npy), and widths that fit together (the coarse embedding is the global token followed by
        the parts, an attention map per part, four numbers per box; coded tokens hold the bytes of the manifest's
        groups, with a scale per row and group of a global token, per row and part)."""
        n, shapes = len(self.items), {name: npy.shape for name, npy in files.items()}
        views = shapes[OWNER][0] if OWNER in shapes else n
        for name, shape in shapes.items():
            if shape[0] != views:
                raise IndexFormatError(f"{self.path / name}: {shape[0]} rows, but "
                                       f"{OWNER + ' lists' if OWNER in shapes else ITEMS + ' lists'} {views} "
                                       f"{'views' if OWNER in shapes else 'images'}")
        widths = {}
        for name in (GLOBAL, PARTS):
            coded, scale, want = files[name].dtype.kind == "u", SCALES[name], groups[name]
            if coded != (scale in files) or coded != bool(want):
                raise IndexFormatError(
                    f"{self.path / name}: " + ("uint8 codes" if coded else "floats") + (
                        f", with{'' if scale in files else 'out'} {scale}" + f" and {'' if want else 'no '}groups in "
                        f"{MANIFEST} (tokens)") + ": codes need both, floats neither; rebuild the index")
            width = shapes[name][-1]
            if coded:
                if coded_bytes(want) != width or name == PARTS and len(want) != 1:
                    raise IndexFormatError(f"{self.path / name}: {width} bytes per vector, but {MANIFEST} codes "
                                           f"it as {[list(g) for g in want]} ({coded_bytes(want)} bytes"
                                           + (", one group per part" if name == PARTS else "") + "); rebuild the index")
                if shapes[scale][1:] != shapes[name][1:-1] + ((len(want),) if name == GLOBAL else ()):
                    raise IndexFormatError(f"{self.path / scale}: shape {shapes[scale]} where the codes of {name} "
                                           f"need {shapes[name][:-1] + ((len(want),) if name == GLOBAL else ())}; "
                                           f"rebuild the index")
                width = sum(w for _, w in want)
            widths[name] = width
        (k, d), g = (shapes[PARTS][1], widths[PARTS]), widths[GLOBAL]
        if EMBEDDINGS in shapes and shapes[EMBEDDINGS][1] != g + k * d or ATTN in shapes and shapes[ATTN][1] != k \
                or (BOXES in shapes and shapes[BOXES][1] != 4):
            raise IndexFormatError(
                f"{self.path}: array widths do not fit together ("
                + (f"{EMBEDDINGS} {shapes[EMBEDDINGS][1:]}, " if EMBEDDINGS in shapes else "") + f"{GLOBAL} "
                f"{shapes[GLOBAL][1:]}, {PARTS} {shapes[PARTS][1:]}"
                + (f", {ATTN} {shapes[ATTN][1:]}" if ATTN in shapes else "")
                + (f", {BOXES} {shapes[BOXES][1:]}" if BOXES in shapes else "") + "); rebuild the index")

    def check_widths(self, embed_dim: int, global_dim: int, parts: int, weights: str | Path | None = None) -> None:
        """IndexFormatError unless the arrays hold what a model of these widths encodes: global tokens of
        `global_dim`, `parts` part tokens of `embed_dim` (and as many attention maps), coarse embeddings of both.
        See check_fits."""
        want = {GLOBAL: (global_dim,), PARTS: (parts, embed_dim), ATTN: (parts,),
                EMBEDDINGS: (global_dim + parts * embed_dim,)}
        have = {GLOBAL: self.global_.shape[1:], PARTS: self.parts.shape[1:], ATTN: self.attn.shape[1:2],
                EMBEDDINGS: self.embeddings.shape[1:]}
        wrong = [f"{name} {tuple(have[name])} where the model needs {want[name]}" for name in want
                 if tuple(have[name]) != want[name]]
        if wrong:
            raise IndexFormatError(f"{self.path}: its arrays do not fit the model ({'; '.join(wrong)}): damaged, or "
                                   f"written by another model; rebuild it with: "
                                   f"{rebuild_command(self.manifest, self.path, weights)}")

    def _open_faiss(self, mmap: bool):
        import faiss

        if self.index_type == "flat":  # exact search over the embeddings (format 3: rebuilt), block by block
            index = faiss.IndexFlatIP(self.embeddings.shape[1])
            for s in range(0, self.views, FINITE_CHECK_ROWS):
                rows = np.arange(s, min(self.views, s + FINITE_CHECK_ROWS))
                index.add(np.ascontiguousarray(rows_float(self.embeddings, rows).numpy()))
            return index
        file = self.path / FAISS_FILE
        try:
            f, _, _ = _open_inside(self._folder, FAISS_FILE)  # FAISS opens it again by name: a regular file here
            f.close()
        except _Refused as why:
            raise IndexFormatError(f"{file}: {why}" + (f", but {MANIFEST} declares a {self.index_type} index"
                                                        if str(why) == "missing" else "")) from None
        try:
            try:
                index = faiss.read_index(str(file), faiss.IO_FLAG_MMAP if mmap else 0)
            except RuntimeError:  # not every index type maps; read it into memory then
                index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise IndexFormatError(f"{file}: unreadable ({str(exc).splitlines()[0][:200]})") from None
        if index.ntotal != len(self.owner) or index.d != self.embeddings.shape[1]:
            raise IndexFormatError(f"{file}: holds {index.ntotal} vectors of {index.d} dims, but there are "
                                   f"{len(self.owner)} views of {self.embeddings.shape[1]} dims")
        return index

    def _resolve_root(self, i: int, root: dict) -> Path:
        """A gallery root: relative to the index folder (so both move together), else the absolute path the
        builder recorded. Never the file system's root: a gallery is a folder of images."""
        rel, absolute = root.get("relative"), root.get("absolute")
        if "\0" in f"{rel}{absolute}":
            raise IndexFormatError(f"{self.path / MANIFEST}: root {i} holds a NUL character")
        if isinstance(rel, str) and rel and (self.path / rel).is_dir():
            path = (self.path / rel).resolve()
        elif isinstance(absolute, str) and Path(absolute).is_absolute():
            path = Path(absolute).resolve()
        elif isinstance(rel, str) and rel:
            path = (self.path / rel).resolve()  # a moved gallery: its images will be reported missing
        else:
            raise IndexFormatError(f"{self.path / MANIFEST}: root {i} names no folder")
        if path == Path(path.anchor):
            raise IndexFormatError(f"{self.path / MANIFEST}: root {i} is the file system's root, not a gallery")
        return path

    def __len__(self) -> int:
        """Number of images (the rows of the arrays are views: see `views`)."""
        return len(self.items)

    @property
    def views(self) -> int:
        return len(self.owner)

    def view_count(self, images: np.ndarray) -> np.ndarray:
        """Number of views (rows) of each of some images."""
        images = np.asarray(images, dtype=np.int64)
        return self.first_row[images + 1] - self.first_row[images]

    def view_rows(self, images: np.ndarray) -> np.ndarray:
        """All rows (views) of some images, image by image."""
        images = np.asarray(images, dtype=np.int64)
        counts = self.view_count(images)
        return np.repeat(self.first_row[images] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())

    @property
    def fingerprint(self) -> str:
        return self.manifest.get("model", {}).get("fingerprint", "")

    def _image(self, i: int) -> tuple[dict, str]:
        """Image i's item and how messages name it (its number and gallery path: no path of the server)."""
        if not 0 <= i < len(self.items):
            raise GalleryFileError(f"gallery image {i}: no such image")
        it = self.items[i]
        return it, f"gallery image {i} ({it['path']})"

    def image_path(self, i: int) -> Path:
        """Where image i lies (its gallery root / its path), for reports and for tools on the gallery's own machine;
        GalleryFileError if it resolves outside its root (a link to elsewhere). Checked on every call, but only
        the path: to serve or decode the image, read it with `read_image`, which checks the file it opens."""
        it, what = self._image(i)
        root = self.roots[it.get("root", 0)]
        path = root / it["path"]
        if not Path(os.path.realpath(path)).is_relative_to(root):
            raise GalleryFileError(f"{what}: leads outside its gallery (a link to elsewhere)")
        return path

    def relative_path(self, i: int) -> str:
        """Image i as its gallery knows it (root-relative, POSIX): what users and API clients see."""
        return self.items[i]["path"]

    def display_path(self, i: int) -> Path:
        """Where the small copy (thumbnail) lies where the builder made one (inside the index folder), else the
        original (image_path). A path for reports: results are served with `read_image(i, display=True)`."""
        it, what = self._image(i)
        thumb = it.get("thumb")
        if not thumb:
            return self.image_path(i)
        if not Path(os.path.realpath(self._folder / thumb)).is_relative_to(self._folder):
            raise GalleryFileError(f"{what}: its thumbnail leads outside the index folder")
        return self._folder / thumb

    def read_image(self, i: int, display: bool = False) -> bytes:
        """The bytes of gallery image i (display: its thumbnail where the builder made one, else the original):
        the one way to serve or decode a gallery image. Checked on every call, on the file actually opened: it
        resolves inside its gallery root (a thumbnail: inside the index folder), is opened without following a
        link and without blocking (a FIFO), is a regular file, is named like an image (IMAGE_SUFFIXES), holds at
        most MAX_IMAGE_BYTES and starts with an image's signature. A file with other links to it (st_nlink > 1)
        is served if it passes: it is an image whatever its other names; a hard link to anything else fails the
        signature check. Anything else raises GalleryFileError, naming the image by number and gallery path."""
        it, what = self._image(i)
        thumb = it.get("thumb") if display else None
        folder, name = (self._folder, thumb) if thumb else (self.roots[it.get("root", 0)], it["path"])
        if thumb:
            what += f", thumbnail {thumb}"
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise GalleryFileError(f"{what}: not an image file (by its name)")
        try:
            f, st, real = _open_inside(folder, name)
        except _Refused as why:
            raise GalleryFileError(f"{what}: {why}") from None
        with f:
            if real.suffix.lower() not in IMAGE_SUFFIXES:  # a link inside the gallery to, say, its metadata.csv
                raise GalleryFileError(f"{what}: not an image file (a link to a file named otherwise)")
            try:
                data = _read_capped(f, st.st_size, MAX_IMAGE_BYTES)
            except OSError as exc:
                raise GalleryFileError(f"{what}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        if data is None:
            raise GalleryFileError(f"{what}: larger than the {MAX_IMAGE_BYTES / 1e6:,.0f} MB an image may be")
        # st_nlink > 1 is fine: a hard link to an image is an image; one to anything else stops here
        if image_type(data[:12]) is None:
            raise GalleryFileError(f"{what}: not an image file (no image signature)")
        return data

    def category_label(self, category: str) -> str | None:
        """The index's name for a category in any spelling ("pants" -> "Pants"), None if it has no such one."""
        return self._label.get(category_key(category))

    def category_images(self, category: str | Sequence[str]) -> np.ndarray:
        """The images of a category, or of several (a garment's kind: mga.garments), in index order."""
        labels = [self.category_label(c) for c in ([category] if isinstance(category, str) else category)]
        found = [self._by_category[label] for label in labels if label]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def tokens(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored global and part tokens of some rows (float32): all ATA needs."""
        return rows_float(self.global_, rows), rows_float(self.parts, rows)

    def encoding(self, rows: np.ndarray) -> Encoding:
        """Stored tokens of some rows as an Encoding (float32)."""
        return Encoding(*(rows_float(a, rows) for a in (self.global_, self.parts, self.attn, self.embeddings)))


