"""Format 3's rows that are not stored as float numbers, read like arrays: coded tokens (CodedRows, and their codes:
decode, coded_bytes, token_groups), coarse embeddings rebuilt from the tokens (CoarseRows), attention maps not
stored at all (EvenMaps)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .coarse import rows_float
from .index_format import CODECS, FINITE_CHECK_ROWS, GLOBAL, PARTS
from .model import coarse_embedding


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
