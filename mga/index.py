"""The index folder's reader, `GalleryIndex`, which opens a folder written by `python -m index_builder` and checks
every file before use (the format and its checks: mga.index_format, mga.index_arrays; coarse search: mga.coarse).

Gallery images are served and decoded through one door, `GalleryIndex.read_image`, which checks the file it
opened on every call: inside its gallery root (a thumbnail: inside the index folder), a regular file, named and
shaped like an image, not too large; anything else is a GalleryFileError that names the image by its number and
gallery path only.
"""
from __future__ import annotations

import os
import shlex
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch

from .coarse import CoarseSearch, rows_float
from .config import MAX_IMAGE_BYTES
from .data import category_key
from .hub import describe_weights
from .index_arrays import _check_finite, _check_headers, _Npy, _open_array
from .index_files import IMAGE_SUFFIXES, _open_inside, _read_capped, _Refused, image_type
from .index_format import (ATTN, BOXES, DEFAULT_TOKENS, EMBEDDINGS, FAISS_FILE, FINITE_CHECK_ROWS, GLOBAL,
                           GLOBAL_SCALE, ITEMS, MANIFEST, OWNER, PARTS, PARTS_SCALE, SCALES, TOKEN_DTYPES,
                           GalleryFileError, IndexFormatError, IndexMismatchError, items_max_bytes)
from .index_manifest import _read_items, _read_manifest, _resolve_root
from .model import Encoding
from .stored_rows import CoarseRows, CodedRows, EvenMaps, token_groups
from .views import FULL_BOX, ZoomViews


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


def check_fits(index: "GalleryIndex", model, weights: str | Path | None = None, fingerprint: str | None = None
               ) -> None:
    """IndexMismatchError unless the index was built with `model` (an MGAModel; `fingerprint`: its, when the
    caller has it), whose vectors are meaningless to other weights; IndexFormatError unless its arrays have the
    widths the model encodes (global token, parts and their width, coarse embedding): an index with the model's
    fingerprint but other widths is damaged or crafted, and every search on it would fail."""
    fp = fingerprint or model.fingerprint()
    if index.fingerprint != fp:
        raise IndexMismatchError(
            f"index {index.path} was built with model fingerprint {index.fingerprint or '(none)'} "
            f"({index.manifest.get('model', {}).get('weights', 'unknown weights')}), but the loaded model "
            f"({describe_weights(weights)}) has fingerprint {fp}. Its vectors are meaningless to this model; "
            f"rebuild the index with: {rebuild_command(index.manifest, index.path, weights)}")
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
        self.roots = [_resolve_root(self.path, i, r) for i, r in enumerate(self.manifest.get("roots", []))]
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
            _check_headers(self.path, len(self.items), files, groups)
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
        if self.index_type == "ivfpq":  # a search is one query: its probed lists split over the threads, not queries
            faiss.extract_index_ivf(index).parallel_mode = 1
        return index

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
