"""mga.index: a damaged or hand-crafted index folder gives an IndexFormatError that names the file and the fault,
and nothing in a manifest or an item can point a reader outside its gallery. Each case corrupts a copy of the
real demo index."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from mga.config import ASSETS_DIR
from mga.index import EMBEDDINGS, FAISS_FILE, ITEMS, MANIFEST, PARTS, GalleryIndex, IndexFormatError

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


def edit_manifest(index: Path, change: Callable[[dict], None]) -> None:
    man = json.loads((index / MANIFEST).read_text())
    change(man)
    (index / MANIFEST).write_text(json.dumps(man))


def edit_items(index: Path, change: Callable[[list[dict]], None]) -> None:
    items = [json.loads(line) for line in (index / ITEMS).read_text().splitlines()]
    change(items)
    (index / ITEMS).write_text("".join(json.dumps(it) + "\n" for it in items))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_row(path: Path) -> None:
    arr = np.load(path)
    arr[3] = np.nan
    np.save(path, arr)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (what is done to the copy, the file the message must name, what it must say)
    "missing array": (lambda ix: (ix / PARTS).unlink(), PARTS, "missing"),
    "truncated array": (lambda ix: truncate(ix / EMBEDDINGS), EMBEDDINGS, "truncated"),
    "manifest not JSON": (lambda ix: (ix / MANIFEST).write_text("{oops"), MANIFEST, "unreadable"),
    "format_version a string": (lambda ix: edit_manifest(ix, lambda m: m.update(format_version="2")), MANIFEST,
                                "format_version '2'"),
    "root out of range": (lambda ix: edit_items(ix, lambda its: its[0].update(root=5)), ITEMS, "root 5"),
    "duplicate path": (lambda ix: edit_items(ix, lambda its: its[1].update(path=its[0]["path"])), ITEMS,
                       "listed twice"),
    "declared HNSW, no file": (lambda ix: edit_manifest(ix, lambda m: m.update(faiss={"type": "hnsw"})),
                               FAISS_FILE, "missing"),
    "NaN rows": (lambda ix: nan_row(ix / EMBEDDINGS), EMBEDDINGS, "row 3 is not finite"),
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
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_damaged_index_names_the_file_and_the_fault(index_copy, name):
    corrupt, file, fault = CORRUPTIONS[name]
    GalleryIndex(index_copy)  # intact copy opens
    corrupt(index_copy)
    with pytest.raises(IndexFormatError) as err:
        GalleryIndex(index_copy)
    assert file in str(err.value) and fault in str(err.value), str(err.value)


def test_a_link_to_outside_the_gallery_is_never_opened(tmp_path):
    """A gallery image replaced by a symlink to a file elsewhere after the build: the index refuses to hand it
    out (a reader would otherwise open, and the app serve, any file the link names)."""
    gallery = tmp_path / "gallery"
    shutil.copytree(DEMO_GALLERY, gallery)
    shutil.copytree(DEMO_INDEX, tmp_path / "index")
    edit_manifest(tmp_path / "index", lambda m: m.update(roots=[{"relative": "../gallery"}]))
    ix = GalleryIndex(tmp_path / "index")
    assert ix.image_path(1) == gallery / ix.relative_path(1)  # an image as built opens
    target = gallery / ix.relative_path(0)
    target.unlink()
    os.symlink(tmp_path / "index" / MANIFEST, target)
    with pytest.raises(IndexFormatError, match="leads outside"):
        ix.image_path(0)
    assert ix.image_path(2).is_file()  # the other images still open


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


def test_format_1_one_full_view_per_image_still_opens_and_searches(index_copy, default_model):
    """An index of format 1 (before zoom views: no owner.npy or boxes.npy, one row per image) is read as one full
    view per image."""
    from mga.index import ATTN, BOXES, GLOBAL, OWNER
    from mga.search import SearchEngine

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
