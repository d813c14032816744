"""The index folder: its format (one home for the file names and what they hold) and its reader, `GalleryIndex`,
which opens a folder written by `python -m index_builder` and checks every file (coarse search: mga.coarse).

Everything read from the folder is validated before use: a damaged or hand-edited index gives an IndexFormatError
that names the file and what is wrong, never a traceback from numpy or FAISS, nor silent nonsense; and no item
or root can make a reader open a file outside its gallery.
"""
from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from .coarse import CoarseSearch, rows_float
from .data import category_key
from .files import temp_folders
from .model import Encoding
from .views import FULL_BOX, ZoomViews

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
FAISS_FILE = "index.faiss"  # HNSW or IVF-PQ; a flat (exact) index is rebuilt from the embeddings at load
EMBEDDINGS = "embeddings.npy"  # float32 (N, E) coarse embeddings: exact re-scoring and FAISS rebuilds
GLOBAL = "global.npy"  # float16 (N, D)
PARTS = "parts.npy"  # float16 (N, K, D)
ATTN = "attn.npy"  # float16 (N, K, h, w)
OWNER = "owner.npy"  # int64 (N,): the image (line of items.jsonl) of each row; rows of one image are adjacent
BOXES = "boxes.npy"  # float32 (N, 4): where each row's view lies in its image, (x0, y0, x1, y1) as fractions
SKIPPED = "skipped.txt"
FORMAT_VERSION = 2  # 2: rows are views (mga.views: full photo + zoom windows), owner.npy and boxes.npy
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
ARRAY_DIMS = {EMBEDDINGS: 2, GLOBAL: 2, PARTS: 3, ATTN: 4, OWNER: 1, BOXES: 2}
FINITE_CHECK_ROWS = 65_536  # rows checked for NaN / inf per step (bounded memory on any index size)


class IndexMismatchError(RuntimeError):
    """The index was built with other weights than the model searching it: its vectors mean nothing here."""


class IndexFormatError(RuntimeError):
    """The folder is not an MGA index, or a damaged one: the message names the file and what is wrong."""


def rebuild_command(manifest: dict, index_dir: str | Path, weights: str | Path | None) -> str:
    """The exact command that rebuilds this index with `weights`."""
    src = manifest.get("source", {})
    cmd = ["python", "-m", "index_builder", "--gallery", str(src.get("gallery", "GALLERY_DIR")),
           "--out", str(index_dir)]
    if src.get("csv"):
        cmd += ["--csv", str(src["csv"])]
    if weights:
        cmd += ["--weights", str(weights)]
    return shlex.join(cmd)


def safe_relative(path: Any, where: str) -> str:
    """`path` if it is a relative POSIX path that stays below its folder (no '..', not absolute), else
    IndexFormatError."""
    p = PurePosixPath(path) if isinstance(path, str) and path else None
    if p is None or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise IndexFormatError(f"{where}: path {str(path)[:200]!r} must be relative and stay inside its folder")
    return path


def _inside(folder: Path, relative: str, where: str) -> Path:
    """folder / relative, refused if it resolves (through symlinks) outside `folder` (itself resolved)."""
    path = folder / relative
    if not path.resolve().is_relative_to(folder):
        raise IndexFormatError(f"{where}: {relative!r} leads outside {folder.name}/ (a link to elsewhere)")
    return path


def _read_manifest(path: Path) -> dict:
    man = path / MANIFEST
    if not man.exists():
        unfinished = temp_folders(path) if path.parent.exists() else []
        hint = f" (an unfinished build is in {unfinished[-1].name}; finish it with --resume)" if unfinished else ""
        raise IndexFormatError(f"{path}: no {MANIFEST}; not an MGA index folder{hint}. "
                               f"Build one with: python -m index_builder --gallery GALLERY_DIR --out {path}")
    try:
        manifest = json.loads(man.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{man}: unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{man}: must hold a JSON object")
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise IndexFormatError(f"{man}: format_version {version!r} " + (
            f"is newer than this code reads ({FORMAT_VERSION}); update the code or rebuild the index" if newer
            else f"is not a format this code reads (1 to {FORMAT_VERSION})"))
    if manifest.get("faiss", {}).get("type", "flat") not in INDEX_TYPES:
        raise IndexFormatError(f"{man}: faiss.type must be one of {INDEX_TYPES}")
    roots = manifest.get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, dict) for r in roots):
        raise IndexFormatError(f"{man}: roots must be a list of objects")
    return manifest


def _read_items(path: Path, n_roots: int) -> list[dict]:
    """items.jsonl, each line checked: a relative path inside its root, an existing root, no path twice."""
    file, items, seen = path / ITEMS, [], set()
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{file}: unreadable ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{where}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise IndexFormatError(f"{where}: must be a JSON object")
        root = item.get("root", 0)
        if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < max(n_roots, 1):
            raise IndexFormatError(f"{where}: root {root!r} is not one of the manifest's {n_roots} roots")
        key = (root, safe_relative(item.get("path"), where))
        if item.get("thumb") is not None:
            safe_relative(item["thumb"], where)
        if key in seen:
            raise IndexFormatError(f"{where}: {key[1]!r} is listed twice")
        seen.add(key)
        items.append(item)
    return items


def _load_array(path: Path, name: str, mmap: bool) -> np.ndarray:
    # copy-on-write maps: nothing writes to them, and torch can gather from them in place (rows_float), which it
    # only does on writable memory
    try:
        array = np.load(path / name, mmap_mode="c" if mmap else None)
    except FileNotFoundError:
        raise IndexFormatError(f"{path / name}: missing; rebuild the index") from None
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFormatError(f"{path / name}: unreadable or truncated ({exc}); rebuild the index") from None
    if array.ndim != ARRAY_DIMS[name] or array.dtype.kind not in "fiu":
        raise IndexFormatError(f"{path / name}: expected a {ARRAY_DIMS[name]}-d numeric array, found "
                               f"{array.ndim}-d {array.dtype}")
    return array


def _check_finite(path: Path, name: str, array: np.ndarray) -> None:
    for start in range(0, len(array), FINITE_CHECK_ROWS):
        chunk = array[start:start + FINITE_CHECK_ROWS]
        bad = ~np.isfinite(chunk).reshape(len(chunk), -1).all(1)
        if bad.any():
            raise IndexFormatError(f"{path / name}: row {start + int(np.argmax(bad))} is not finite (NaN or inf); "
                                   f"rebuild the index with working weights")


class GalleryIndex(CoarseSearch):
    """An index folder opened read-only: manifest, items (one per image), FAISS index and memory-mapped token
    arrays (one row per view: each image's full photo first, then its zoom windows); searched by CoarseSearch."""

    def __init__(self, path: str | Path, mmap: bool = True):
        self.path = Path(path)
        self._folder, self._checked = self.path.resolve(), {}  # image i -> its checked path (image_path)
        self.manifest: dict = _read_manifest(self.path)
        self.roots = [self._resolve_root(i, r) for i, r in enumerate(self.manifest.get("roots", []))]
        self.items: list[dict] = _read_items(self.path, len(self.roots))
        self.embeddings = _load_array(self.path, EMBEDDINGS, mmap)
        self.global_ = _load_array(self.path, GLOBAL, mmap)
        self.parts = _load_array(self.path, PARTS, mmap)
        self.attn = _load_array(self.path, ATTN, mmap)
        n = len(self.items)
        if (self.path / OWNER).exists():
            self.owner = _load_array(self.path, OWNER, mmap=False).astype(np.int64, copy=False)
            self.boxes = _load_array(self.path, BOXES, mmap=False)
        else:  # format 1: one full view per image
            self.owner = np.arange(n, dtype=np.int64)
            self.boxes = np.tile(np.array(FULL_BOX, dtype=np.float32), (n, 1))
        self.zoom = ZoomViews.from_dict(self.manifest.get("zoom"))
        v = len(self.owner)
        for name, arr in ((EMBEDDINGS, self.embeddings), (GLOBAL, self.global_), (PARTS, self.parts),
                          (ATTN, self.attn), (BOXES, self.boxes)):
            if arr.shape[0] != v:
                raise IndexFormatError(f"{self.path / name}: {arr.shape[0]} rows, but {OWNER} lists {v} views")
        # rows of image i: first_row[i] (its full photo) up to first_row[i + 1]; every image has a view
        self.first_row = np.searchsorted(self.owner, np.arange(n + 1))
        if v and (np.any(np.diff(self.owner) < 0) or self.owner[0] != 0 or self.owner[-1] != n - 1) \
                or np.any(np.diff(self.first_row) < 1):
            raise IndexFormatError(f"{self.path / OWNER}: must map views to the {n} images of {ITEMS} in order")
        for name, arr in ((EMBEDDINGS, self.embeddings), (GLOBAL, self.global_)):
            _check_finite(self.path, name, arr)
        params = self.manifest.get("faiss", {})
        self.index_type: str = params.get("type", "flat")
        self.faiss = self._open_faiss(mmap)
        self.ef_search: int = int(params.get("ef_search", 128))
        self.nprobe: int = int(params.get("nprobe", 32))
        self.refine: int = int(params.get("refine", 1))  # candidates fetched per result, re-scored exactly
        # one category per spelling ("Pants", "pants"), shown as its most common one
        keys = np.array([category_key(str(it.get("category", ""))) for it in self.items])
        spellings = Counter((k, str(it.get("category", ""))) for k, it in zip(keys.tolist(), self.items) if k)
        self._label: dict[str, str] = {}
        for (key, spelling), _ in spellings.most_common():
            self._label.setdefault(key, spelling)
        self.categories = sorted(self._label.values())
        self._by_category = {self._label[key]: np.flatnonzero(keys == key) for key in self._label}
        self.category_keys = keys  # per image: what the category vote counts (mga.category_vote)
        self.item_photos = Counter(str(it.get("item_id", "")) for it in self.items)  # photos per product

    def _open_faiss(self, mmap: bool):
        import faiss

        if self.index_type == "flat":  # exact search over the stored embeddings: no second copy on disk
            index = faiss.IndexFlatIP(self.embeddings.shape[1])
            index.add(np.ascontiguousarray(self.embeddings, dtype=np.float32))
            return index
        file = self.path / FAISS_FILE
        if not file.exists():
            raise IndexFormatError(f"{file}: missing, but {MANIFEST} declares a {self.index_type} index")
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

    def image_path(self, i: int) -> Path:
        """Image i's file, which must lie inside its gallery root (a symlink that points elsewhere is refused, so
        no caller reads or serves a file outside the gallery). Checked once per image: resolving a path costs a
        system call per folder, a search asks for a few dozen."""
        if i not in self._checked:
            it = self.items[i]
            self._checked[i] = _inside(self.roots[it.get("root", 0)], it["path"], f"{self.path / ITEMS}: image {i}")
        return self._checked[i]

    def relative_path(self, i: int) -> str:
        """Image i as its gallery knows it (root-relative, POSIX): what users and API clients see."""
        return self.items[i]["path"]

    def display_path(self, i: int) -> Path:
        """A small copy (thumbnail) where the builder made one, else the original."""
        thumb = self.items[i].get("thumb")
        return _inside(self._folder, thumb, f"{self.path / ITEMS}: thumbnail of image {i}") if thumb \
            else self.image_path(i)

    def category_label(self, category: str) -> str | None:
        """The index's name for a category in any spelling ("pants" -> "Pants"), None if it has no such one."""
        return self._label.get(category_key(category))

    def category_images(self, category: str) -> np.ndarray:
        label = self.category_label(category)
        return self._by_category[label] if label else np.zeros(0, dtype=np.int64)

    def tokens(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored global and part tokens of some rows (float32): all ATA needs."""
        return rows_float(self.global_, rows), rows_float(self.parts, rows)

    def encoding(self, rows: np.ndarray) -> Encoding:
        """Stored tokens of some rows as an Encoding (float32)."""
        return Encoding(*(rows_float(a, rows) for a in (self.global_, self.parts, self.attn, self.embeddings)))


