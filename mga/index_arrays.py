"""The index's array files (.npy): each opened inside its folder and its header checked against its file, its
dimensions and its type before a byte of it is loaded (_open_array), the headers checked against each other
(_check_headers), and the loaded rows checked finite (_check_finite)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .index_format import (
    ARRAY_DIMS,
    ARRAY_KINDS,
    ATTN,
    BOXES,
    CODE_SIZES,
    EMBEDDINGS,
    FINITE_CHECK_ROWS,
    FLOAT_SIZES,
    GLOBAL,
    ITEMS,
    MANIFEST,
    OWNER,
    PARTS,
    SCALES,
    IndexFormatError,
)
from .index_manifest import _open_index_file
from .stored_rows import coded_bytes


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
    opened = _open_index_file(folder, where, name)
    if opened is None:
        return None
    f, st = opened
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


def _check_headers(path: Path, images: int, files: dict[str, _Npy],
                   groups: dict[str, tuple[tuple[str, int], ...]]) -> None:
    """The arrays' headers against each other: one row per view in every array (one per image of the items
    without owner.npy), and widths that fit together (the coarse embedding is the global token followed by
    the parts, an attention map per part, four numbers per box; coded tokens hold the bytes of the manifest's
    groups, with a scale per row and group of a global token, per row and part)."""
    shapes = {name: npy.shape for name, npy in files.items()}
    views = shapes[OWNER][0] if OWNER in shapes else images
    for name, shape in shapes.items():
        if shape[0] != views:
            raise IndexFormatError(f"{path / name}: {shape[0]} rows, but "
                                   f"{OWNER + ' lists' if OWNER in shapes else ITEMS + ' lists'} {views} "
                                   f"{'views' if OWNER in shapes else 'images'}")
    widths = {}
    for name in (GLOBAL, PARTS):
        coded, scale, want = files[name].dtype.kind == "u", SCALES[name], groups[name]
        if coded != (scale in files) or coded != bool(want):
            raise IndexFormatError(
                f"{path / name}: " + ("uint8 codes" if coded else "floats") + (
                    f", with{'' if scale in files else 'out'} {scale}" + f" and {'' if want else 'no '}groups in "
                    f"{MANIFEST} (tokens)") + ": codes need both, floats neither; rebuild the index")
        width = shapes[name][-1]
        if coded:
            if coded_bytes(want) != width or name == PARTS and len(want) != 1:
                raise IndexFormatError(f"{path / name}: {width} bytes per vector, but {MANIFEST} codes "
                                       f"it as {[list(g) for g in want]} ({coded_bytes(want)} bytes"
                                       + (", one group per part" if name == PARTS else "") + "); rebuild the index")
            if shapes[scale][1:] != shapes[name][1:-1] + ((len(want),) if name == GLOBAL else ()):
                raise IndexFormatError(f"{path / scale}: shape {shapes[scale]} where the codes of {name} "
                                       f"need {shapes[name][:-1] + ((len(want),) if name == GLOBAL else ())}; "
                                       f"rebuild the index")
            width = sum(w for _, w in want)
        widths[name] = width
    (k, d), g = (shapes[PARTS][1], widths[PARTS]), widths[GLOBAL]
    if EMBEDDINGS in shapes and shapes[EMBEDDINGS][1] != g + k * d or ATTN in shapes and shapes[ATTN][1] != k \
            or (BOXES in shapes and shapes[BOXES][1] != 4):
        raise IndexFormatError(
            f"{path}: array widths do not fit together ("
            + (f"{EMBEDDINGS} {shapes[EMBEDDINGS][1:]}, " if EMBEDDINGS in shapes else "") + f"{GLOBAL} "
            f"{shapes[GLOBAL][1:]}, {PARTS} {shapes[PARTS][1:]}"
            + (f", {ATTN} {shapes[ATTN][1:]}" if ATTN in shapes else "")
            + (f", {BOXES} {shapes[BOXES][1:]}" if BOXES in shapes else "") + "); rebuild the index")

