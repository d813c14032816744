"""mga.index (its checks: mga.index_manifest, mga.index_arrays): a damaged or hand-crafted index folder gives an
IndexFormatError that names the file and the fault, and nothing in a manifest or an item can point a reader outside
its gallery. Each case corrupts a copy of the real demo index (format 3), or of that copy written back as format 2
(`as_format_2`), which still opens."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bench.scaling import as_format_2
from mga.config import ASSETS_DIR
from mga.index import GalleryIndex, check_fits
from mga.index_format import (ATTN, BOXES, EMBEDDINGS, FAISS_FILE, GLOBAL, ITEMS, MANIFEST, OWNER, PARTS,
                              GalleryFileError, IndexFormatError)

DEMO_INDEX = ASSETS_DIR / "demo-index"
DEMO_GALLERY = ASSETS_DIR / "demo-gallery"


@pytest.fixture
def index_copy(tmp_path) -> Path:
    """The demo index copied beside a link to its gallery, so that its relative root still resolves."""
    shutil.copytree(DEMO_INDEX, tmp_path / "index")
    (tmp_path / "demo-gallery").symlink_to(DEMO_GALLERY.resolve())
    man = json.loads((tmp_path / "index" / MANIFEST).read_text())
    assert man["roots"] == [{"relative": "../demo-gallery"}]
    return tmp_path / "index"


@pytest.fixture
def format_2_copy(index_copy) -> Path:
    return as_format_2(index_copy)


def edit_manifest(index: Path, change: Callable[[dict], None]) -> None:
    man = json.loads((index / MANIFEST).read_text())
    change(man)
    (index / MANIFEST).write_text(json.dumps(man))


def edit_items(index: Path, change: Callable[[list[dict]], None]) -> None:
    items = [json.loads(line) for line in (index / ITEMS).read_text().splitlines()]
    change(items)
    (index / ITEMS).write_text("".join(json.dumps(it) + "\n" for it in items))


def edit_lines(index: Path, change: Callable[[list[str]], None]) -> None:
    lines = (index / ITEMS).read_text().splitlines()
    change(lines)
    (index / ITEMS).write_text("".join(line + "\n" for line in lines))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_row(path: Path) -> None:
    arr = np.load(path)
    arr[3] = np.nan
    np.save(path, arr)


def fifo(path: Path) -> None:
    """A named pipe in place of the file: a reader that opened it to read would wait for a writer forever."""
    path.unlink()
    os.mkfifo(path)


def relink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def header_only(path: Path, shape: tuple[int, ...], dtype: str, size: int | None = None) -> None:
    """An .npy file whose header declares `shape` but that holds no data, or (size) a sparse file of that size."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                 "shape": shape})
        if size:
            f.truncate(size)


def npy_size(shape: tuple[int, ...], dtype: str) -> int:
    """The size of a whole .npy file of `shape`: its header (as header_only writes it) and its data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    return len(buf.getvalue()) + int(np.prod(shape)) * np.dtype(dtype).itemsize


def resave(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, change(np.load(path)))


def sparse(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def drop_a_part(ix: Path) -> None:
    """Arrays of one part fewer, consistent with each other (an index of another model)."""
    resave(ix / PARTS, lambda a: a[:, :-1])


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (what is done to the copy, the file the message must name, what it must say)
    "missing array": (lambda ix: (ix / PARTS).unlink(), PARTS, "missing"),
    "missing owner.npy": (lambda ix: (ix / OWNER).unlink(), OWNER, "missing"),
    "truncated array": (lambda ix: truncate(ix / GLOBAL), GLOBAL, "truncated"),
    "manifest not JSON": (lambda ix: (ix / MANIFEST).write_text("{oops"), MANIFEST, "unreadable"),
    "format_version a string": (lambda ix: edit_manifest(ix, lambda m: m.update(format_version="2")), MANIFEST,
                                "format_version '2'"),
    "root out of range": (lambda ix: edit_items(ix, lambda its: its[0].update(root=5)), ITEMS, "root 5"),
    "duplicate path": (lambda ix: edit_items(ix, lambda its: its[1].update(path=its[0]["path"])), ITEMS,
                       "listed twice"),
    # items are parsed as one array first: a line of two objects, or one object over two lines, must still be
    # refused by its line
    "two items on a line": (lambda ix: edit_lines(ix, lambda ls: ls.__setitem__(2, ls[2] + ", " + ls[3])), ITEMS,
                            "line 3: not JSON"),
    "an item over two lines": (lambda ix: edit_lines(ix, lambda ls: ls.__setitem__(slice(2, 3), [ls[2][:9],
                                                                                              ls[2][9:]])),
                               ITEMS, "line 3: not JSON"),
    "declared HNSW, no file": (lambda ix: edit_manifest(ix, lambda m: m.update(faiss={"type": "hnsw"})),
                               FAISS_FILE, "missing"),
    "NaN rows": (lambda ix: nan_row(ix / GLOBAL), GLOBAL, "row 3 is not finite"),
    "NaN in a part token": (lambda ix: nan_row(ix / PARTS), PARTS, "row 3 is not finite"),
    "format 3 without its coarse weight": (lambda ix: edit_manifest(ix, lambda m: m.pop("coarse")), MANIFEST,
                                           "coarse.global_weight"),
    "root is /": (lambda ix: edit_manifest(ix, lambda m: m.update(roots=[{"relative": "/"}])), MANIFEST,
                  "file system's root"),
    "root names nothing": (lambda ix: edit_manifest(ix, lambda m: m.update(roots=[{}])), MANIFEST,
                           "names no folder"),
    "item path climbs out": (lambda ix: edit_items(ix, lambda its: its[0].update(path="../../../../etc/passwd")),
                             ITEMS, "must be relative"),
    "absolute item path": (lambda ix: edit_items(ix, lambda its: its[2].update(path="/etc/passwd")), ITEMS,
                           "must be relative"),
    "thumbnail climbs out": (lambda ix: edit_items(ix, lambda its: its[0].update(thumb="../../app.py")), ITEMS,
                             "must be relative"),
    # fields of the wrong type: one error at start, never a traceback in a search
    "faiss a string": (lambda ix: edit_manifest(ix, lambda m: m.update(faiss="x")), MANIFEST,
                       "faiss must be an object"),
    "faiss.ef_search a string": (lambda ix: edit_manifest(ix, lambda m: m.update(faiss={"type": "flat",
                                                                                        "ef_search": "a"})),
                                 MANIFEST, "faiss.ef_search 'a'"),
    "zoom a number": (lambda ix: edit_manifest(ix, lambda m: m.update(zoom=5)), MANIFEST, "zoom must be an object"),
    "zoom of unknown fields": (lambda ix: edit_manifest(ix, lambda m: m.update(zoom={"grid": 4, "x": 1})), MANIFEST,
                               "unknown fields"),
    "model a list": (lambda ix: edit_manifest(ix, lambda m: m.update(model=[])), MANIFEST,
                     "model must be an object"),
    "model null": (lambda ix: edit_manifest(ix, lambda m: m.update(model=None)), MANIFEST,
                   "model must be an object"),
    "root path a number": (lambda ix: edit_manifest(ix, lambda m: m.update(roots=[{"relative": 5}])), MANIFEST,
                           "root 0: relative must be a string"),
    "source a number": (lambda ix: edit_manifest(ix, lambda m: m.update(source=3)), MANIFEST,
                        "source must be an object"),
    "skipped a string": (lambda ix: edit_manifest(ix, lambda m: m.update(skipped="all")), MANIFEST,
                         "skipped must be a list"),
    "item meta a number": (lambda ix: edit_items(ix, lambda its: its[0].update(meta=5)), ITEMS,
                           "meta must be an object"),
    "item_id a list": (lambda ix: edit_items(ix, lambda its: its[4].update(item_id=[])), ITEMS, "item_id"),
    "item width a string": (lambda ix: edit_items(ix, lambda its: its[0].update(width="wide")), ITEMS,
                            "width must be a whole number"),
    # files that are not regular files, or not of the index: refused without blocking or reading them
    "owner.npy a FIFO": (lambda ix: fifo(ix / OWNER), OWNER, "not a regular file"),
    "items.jsonl a FIFO": (lambda ix: fifo(ix / ITEMS), ITEMS, "not a regular file"),
    "manifest.json a FIFO": (lambda ix: fifo(ix / MANIFEST), MANIFEST, "not a regular file"),
    "index.faiss a FIFO": (lambda ix: (edit_manifest(ix, lambda m: m.update(faiss={"type": "hnsw"})),
                                      (ix / FAISS_FILE).touch(), fifo(ix / FAISS_FILE)), FAISS_FILE,
                           "not a regular file"),
    "manifest.json a link to /dev/zero": (lambda ix: relink(ix / MANIFEST, Path("/dev/zero")), MANIFEST,
                                          "leads outside"),
    "global.npy a link out of the index": (lambda ix: (shutil.copy(ix / GLOBAL, ix.parent / "e.npy"),
                                                       relink(ix / GLOBAL, ix.parent / "e.npy")),
                                           GLOBAL, "leads outside"),
    "manifest.json of 65 MB": (lambda ix: sparse(ix / MANIFEST, 65 * 2**20), MANIFEST, "more than the 64 MB"),
    "items.jsonl of 1 GB": (lambda ix: sparse(ix / ITEMS, 2**30), ITEMS, "more than the"),
    # arrays: their headers are checked against their files, each other and the items before anything is loaded
    "owner.npy header of 1e11 rows": (lambda ix: header_only(ix / OWNER, (10**11,), "<i8"), OWNER,
                                      "its header declares (100000000000,)"),
    "global.npy header of 1e11 rows": (lambda ix: header_only(ix / GLOBAL, (10**11, 1408), "<f2"),
                                       GLOBAL, "truncated or damaged"),
    "owner.npy a sparse file of 1e9 rows": (lambda ix: header_only(ix / OWNER, (10**9,), "<i8",
                                                                   npy_size((10**9,), "<i8")),
                                            OWNER, "lists 1000000000 views"),
    "owner.npy of floats": (lambda ix: resave(ix / OWNER, lambda a: a.astype(np.float64)), OWNER,
                            "whole numbers"),
    "global.npy big-endian": (lambda ix: resave(ix / GLOBAL, lambda a: a.astype(">f2")), GLOBAL,
                              "native byte order"),
    "parts.npy of complex numbers": (lambda ix: resave(ix / PARTS, lambda a: a.astype(np.complex64)), PARTS,
                                     "floats"),
}


# format 2's own arrays: float32 coarse embeddings and float16 maps, on a copy written back as format 2
FORMAT_2_CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing maps": (lambda ix: (ix / ATTN).unlink(), ATTN, "missing"),
    "truncated embeddings": (lambda ix: truncate(ix / EMBEDDINGS), EMBEDDINGS, "truncated"),
    "NaN embeddings": (lambda ix: nan_row(ix / EMBEDDINGS), EMBEDDINGS, "row 3 is not finite"),
    "embeddings.npy a link out of the index": (lambda ix: (shutil.copy(ix / EMBEDDINGS, ix.parent / "e.npy"),
                                                           relink(ix / EMBEDDINGS, ix.parent / "e.npy")),
                                               EMBEDDINGS, "leads outside"),
    "embeddings.npy header of 1e11 rows": (lambda ix: header_only(ix / EMBEDDINGS, (10**11, 2176), "<f4"),
                                           EMBEDDINGS, "truncated or damaged"),
    "embeddings.npy big-endian": (lambda ix: resave(ix / EMBEDDINGS, lambda a: a.astype(">f4")), EMBEDDINGS,
                                  "native byte order"),
    "embeddings one part short": (lambda ix: resave(ix / EMBEDDINGS, lambda a: a[:, :-128]), EMBEDDINGS,
                                  "do not fit together"),
    "maps one part short": (lambda ix: resave(ix / ATTN, lambda a: a[:, :-1]), ATTN, "do not fit together"),
    "parts.npy one part short": (lambda ix: resave(ix / PARTS, lambda a: a[:, :-1]), PARTS,
                                 "do not fit together"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_damaged_index_names_the_file_and_the_fault(index_copy, name):
    corrupt, file, fault = CORRUPTIONS[name]
    GalleryIndex(index_copy)  # intact copy opens
    corrupt(index_copy)
    with pytest.raises(IndexFormatError) as err:
        GalleryIndex(index_copy)
    assert file in str(err.value) and fault in str(err.value), str(err.value)


@pytest.mark.parametrize("name", list(FORMAT_2_CORRUPTIONS))
def test_a_damaged_format_2_index_names_the_file_and_the_fault(format_2_copy, name):
    corrupt, file, fault = FORMAT_2_CORRUPTIONS[name]
    assert GalleryIndex(format_2_copy).format_version == 2  # intact copy opens
    corrupt(format_2_copy)
    with pytest.raises(IndexFormatError) as err:
        GalleryIndex(format_2_copy)
    assert file in str(err.value) and fault in str(err.value), str(err.value)


def test_arrays_that_do_not_fit_the_model_are_refused_by_name(index_copy, default_model):
    """Arrays of consistent widths that are not the model's (one part fewer here), under its fingerprint: a
    damaged or crafted index, on which every search would fail. check_fits says so, naming the array, before
    any search."""
    check_fits(GalleryIndex(index_copy), default_model)  # the demo index fits the default model
    drop_a_part(index_copy)
    ix = GalleryIndex(index_copy)  # consistent in itself
    with pytest.raises(IndexFormatError) as err:
        check_fits(ix, default_model)
    msg = str(err.value)
    assert "parts.npy (5, 128) where the model needs (6, 128)" in msg and "python -m index_builder" in msg, msg
    assert "--tokens float16" in msg  # the rebuild command keeps the tokens' form (the demo's is not the default)


def test_a_link_to_outside_the_gallery_is_never_opened(tmp_path):
    """A gallery image replaced by a symlink to a file elsewhere after the build: the index refuses to hand it
    out (a reader would otherwise open, and the app serve, any file the link names)."""
    gallery = tmp_path / "gallery"
    shutil.copytree(DEMO_GALLERY, gallery)
    shutil.copytree(DEMO_INDEX, tmp_path / "index")
    edit_manifest(tmp_path / "index", lambda m: m.update(roots=[{"relative": "../gallery"}]))
    ix = GalleryIndex(tmp_path / "index")
    assert ix.image_path(1) == gallery / ix.relative_path(1)  # an image as built opens
    assert ix.read_image(1) == (gallery / ix.relative_path(1)).read_bytes()
    target = gallery / ix.relative_path(0)
    target.unlink()
    os.symlink(tmp_path / "index" / MANIFEST, target)
    for look in (ix.image_path, ix.read_image):
        with pytest.raises(GalleryFileError, match="leads outside"):
            look(0)
    assert ix.image_path(2).is_file() and ix.read_image(2)  # the other images still open


def test_one_category_per_spelling(index_copy):
    """"Pants" and "pants" (or "Hoodies_Sweatshirts") are one category, offered once, filtered in any spelling."""
    ix = GalleryIndex(index_copy)
    name = ix.categories[0]
    members = set(ix.category_images(name).tolist())
    edit_items(index_copy, lambda its: [it.update(category=it["category"].lower()) for it in its[::2]
                                        if it.get("category") == name])
    ix = GalleryIndex(index_copy)
    assert (name in ix.categories) + (name.lower() in ix.categories) == 1  # one entry, its commonest spelling
    for spelling in (name, name.lower(), name.upper().replace(" ", "_")):
        assert set(ix.category_images(spelling).tolist()) == members
    assert ix.category_label("no such thing") is None and len(ix.category_images("no such thing")) == 0


def test_format_1_one_full_view_per_image_still_opens_and_searches(format_2_copy, default_model):
    """An index of format 1 (before zoom views: no owner.npy or boxes.npy, one row per image) is read as one full
    view per image."""
    from mga.search import SearchEngine

    index_copy = format_2_copy
    ix = GalleryIndex(index_copy)
    first = ix.first_row[:-1]
    for name in (EMBEDDINGS, GLOBAL, PARTS, ATTN):
        arr = np.load(index_copy / name)[first]
        np.save(index_copy / name, arr)
    (index_copy / OWNER).unlink()
    (index_copy / BOXES).unlink()
    edit_manifest(index_copy, lambda m: m.update(format_version=1))
    old = GalleryIndex(index_copy)
    assert old.views == len(old) == len(ix) and (old.boxes == np.array([0, 0, 1, 1], np.float32)).all()
    res = SearchEngine(default_model, old).search(DEMO_GALLERY / old.relative_path(5), k=3, explain=False)
    assert res.matches[0].image == old.relative_path(5)  # a gallery photo finds itself


def test_a_large_index_s_items_cap_is_not_allocated_up_front(index_copy, monkeypatch):
    """items.jsonl's cap grows with the views (64 kB each: about 750 GB at 11.7 million views); reading it must
    cost the file's size, not the cap's."""
    import mga.index_format

    monkeypatch.setattr(mga.index_format, "ITEMS_BYTES_PER_VIEW", 2**40)
    ix = GalleryIndex(index_copy)
    assert len(ix.items) == len(GalleryIndex(DEMO_INDEX).items) > 0
