"""Serving gallery images: `GalleryIndex.read_image` (what the app's /gallery route and `ui.files.GalleryFiles`
hand out, and what decoding a gallery photo reads) gives the bytes of an image file of the gallery, or of a
thumbnail inside the index, and nothing else, whatever a crafted index lists or a gallery became after its build.
Each case changes a real copy of the demo index and its gallery; every refusal is a GalleryFileError that names
the image by its number and gallery path only."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from mga.config import ASSETS_DIR, MAX_IMAGE_BYTES
from mga.index import GalleryIndex
from mga.index_files import image_type
from mga.index_format import ITEMS, MANIFEST, GalleryFileError
from ui.files import GalleryFiles

DEMO_INDEX = ASSETS_DIR / "demo-index"
DEMO_GALLERY = ASSETS_DIR / "demo-gallery"


def edit_manifest(index: Path, change: Callable[[dict], None]) -> None:
    man = json.loads((index / MANIFEST).read_text())
    change(man)
    (index / MANIFEST).write_text(json.dumps(man))


def edit_item(index: Path, i: int, **fields) -> None:
    items = [json.loads(line) for line in (index / ITEMS).read_text().splitlines()]
    items[i].update(fields)
    (index / ITEMS).write_text("".join(json.dumps(it) + "\n" for it in items))


@pytest.fixture
def shop(tmp_path) -> tuple[Path, Path, Path]:
    """(index, gallery, private): the demo index and a copy of its gallery, and beside them a folder of files
    that must never be served: a secret, weights, a real photo that is not the gallery's."""
    gallery, index, private = tmp_path / "shop" / "gallery", tmp_path / "shop" / "index", tmp_path / "private"
    shutil.copytree(DEMO_GALLERY, gallery)
    shutil.copytree(DEMO_INDEX, index)
    edit_manifest(index, lambda m: m.update(roots=[{"relative": "../gallery"}]))
    private.mkdir()
    (private / "secret.txt").write_text("password=hunter2\n")
    (private / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(64))
    (private / "weights.jpg").write_bytes((private / "model.safetensors").read_bytes())
    shutil.copy(gallery / json.loads((index / ITEMS).read_text().splitlines()[5])["path"], private / "photo.jpg")
    return index, gallery, private


def other_root(index: Path, root: dict, path: str) -> None:
    """A second root in the manifest, and image 0 listed in it."""
    edit_manifest(index, lambda m: m.update(roots=m["roots"] + [root]))
    edit_item(index, 0, root=1, path=path)


def link(target: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.unlink(missing_ok=True)
    at.symlink_to(target)


def sparse_jpeg(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(size)


# name: (what is done to the shop (index, gallery, private), which reads of image 0 are refused
# (display: the thumbnail where there is one; original), what the refusal says)
CRAFTED: dict[str, tuple[Callable[[Path, Path, Path], None], tuple[bool, ...], str]] = {
    "absolute root elsewhere": (lambda ix, g, p: other_root(ix, {"absolute": str(p)}, "secret.txt"),
                                (True, False), "not an image file"),
    "absolute root /etc": (lambda ix, g, p: other_root(ix, {"absolute": "/etc"}, "passwd"), (True, False),
                           "not an image file"),
    "a non-image named .jpg": (lambda ix, g, p: other_root(ix, {"absolute": str(p)}, "weights.jpg"), (True, False),
                               "no image signature"),
    "relative root above the index": (lambda ix, g, p: other_root(ix, {"relative": "../.."},
                                                                  "private/model.safetensors"),
                                      (True, False), "not an image file"),
    "thumbnail is an array of the index": (lambda ix, g, p: edit_item(ix, 0, thumb="global.npy"), (True,),
                                           "not an image file"),
    "thumbnail hard link to an array": (lambda ix, g, p: ((ix / "thumbs").mkdir(),
                                                          os.link(ix / "global.npy", ix / "thumbs" / "t.jpg"),
                                                          edit_item(ix, 0, thumb="thumbs/t.jpg")),
                                        (True,), "no image signature"),
    "thumbnail links out of the index": (lambda ix, g, p: (link(p / "photo.jpg", ix / "thumbs" / "t.jpg"),
                                                           edit_item(ix, 0, thumb="thumbs/t.jpg")),
                                         (True,), "leads outside"),
    "the gallery's metadata.csv": (lambda ix, g, p: edit_item(ix, 0, path="metadata.csv"), (True, False),
                                   "not an image file"),
    "a text file named .jpg": (lambda ix, g, p: ((g / "notes.jpg").write_text("not a photo"),
                                                 edit_item(ix, 0, path="notes.jpg")), (True, False),
                               "no image signature"),
    "a link in the gallery to its CSV": (lambda ix, g, p: (link(g / "metadata.csv", g / "meta.jpg"),
                                                           edit_item(ix, 0, path="meta.jpg")), (True, False),
                                         "not an image file"),
    "a link to /dev/zero": (lambda ix, g, p: (link(Path("/dev/zero"), g / "zero.jpg"),
                                              edit_item(ix, 0, path="zero.jpg")), (True, False), "leads outside"),
    "a FIFO": (lambda ix, g, p: (os.mkfifo(g / "pipe.jpg"), edit_item(ix, 0, path="pipe.jpg")), (True, False),
               "not a regular file"),
    "a folder named .jpg": (lambda ix, g, p: ((g / "dir.jpg").mkdir(), edit_item(ix, 0, path="dir.jpg")),
                            (True, False), "not a regular file"),
    "a missing photo": (lambda ix, g, p: (g / json.loads((ix / ITEMS).read_text().splitlines()[0])["path"]).unlink(),
                        (True, False), "missing"),
    "a huge file": (lambda ix, g, p: (sparse_jpeg(g / "huge.jpg", MAX_IMAGE_BYTES + 1),
                                      edit_item(ix, 0, path="huge.jpg")), (True, False), "larger than"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_only_image_files_of_the_gallery_are_served(shop, tmp_path, name):
    index, gallery, private = shop
    change, refused, says = CRAFTED[name]
    change(index, gallery, private)
    ix = GalleryIndex(index)  # a crafted item is refused when it is read, not at start: the rest still serve
    files = GalleryFiles(ix, tmp_path / "copies")
    for display in (True, False):
        if display not in refused:
            assert image_type(ix.read_image(0, display)) == "image/jpeg"
            continue
        for read in (ix.read_image, files.display if display else files.original):
            with pytest.raises(GalleryFileError) as err:
                read(0, display) if read == ix.read_image else read(0)
            msg = str(err.value)
            assert says in msg and msg.startswith(f"gallery image 0 ({ix.relative_path(0)})"), msg
            assert str(tmp_path) not in msg and "/etc" not in msg and str(ASSETS_DIR) not in msg, msg
    assert not [f for f in (tmp_path / "copies").rglob("*") if f.is_file()]  # nothing copied, nothing left over
    assert ix.read_image(1) == (gallery / ix.relative_path(1)).read_bytes()  # the others still serve
    assert Path(files.display(1)).read_bytes() == ix.read_image(1, display=True)


def test_a_file_swapped_after_it_was_served_is_checked_again(shop, tmp_path):
    """No check is remembered: an image served once, then replaced by a link to a file elsewhere (or by a FIFO),
    is refused on its next read; a link to another photo of the same gallery is still served."""
    index, gallery, private = shop
    ix = GalleryIndex(index)
    path = gallery / ix.relative_path(0)
    first = ix.read_image(0)
    assert Path(GalleryFiles(ix, tmp_path / "a").original(0)).read_bytes() == first == path.read_bytes()
    link(private / "photo.jpg", path)
    with pytest.raises(GalleryFileError, match="leads outside"):
        ix.read_image(0)
    with pytest.raises(GalleryFileError, match="leads outside"):
        GalleryFiles(ix, tmp_path / "b").display(0)
    link(gallery / ix.relative_path(3), path)  # a link inside the gallery: an image of its own
    assert ix.read_image(0) == (gallery / ix.relative_path(3)).read_bytes()
    path.unlink()
    os.mkfifo(path)  # never opened for a blocking read: refused at once
    with pytest.raises(GalleryFileError, match="not a regular file"):
        ix.read_image(0)


def test_hard_links_serve_images_only(shop, tmp_path):
    """A hard link is a file with two names: served when it is an image, refused by its signature otherwise."""
    index, gallery, private = shop
    ix = GalleryIndex(index)
    photo = gallery / ix.relative_path(0)
    os.link(photo, gallery / "img" / "another-name.jpg")
    assert photo.stat().st_nlink == 2 and ix.read_image(0) == photo.read_bytes()
    photo.unlink()
    os.link(private / "secret.txt", photo)
    with pytest.raises(GalleryFileError, match="no image signature"):
        ix.read_image(0)


def test_every_image_format_is_recognised_and_thumbnails_are_served(shop, tmp_path):
    """JPEG, PNG, GIF, WebP, BMP and TIFF files are served as they are, and told apart by their signature (the
    app sends that type); a thumbnail inside the index is what results show, the original what "more like
    this" opens."""
    index, gallery, _ = shop
    photo = Image.open(gallery / GalleryIndex(index).relative_path(0)).convert("RGB")
    formats = {"png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "jpeg": "JPEG"}
    for i, (suffix, kind) in enumerate(formats.items()):
        photo.save(gallery / f"photo.{suffix}", kind)
        edit_item(index, i, path=f"photo.{suffix}")
    (index / "thumbs").mkdir()
    photo.resize((40, 50)).save(index / "thumbs" / "small.jpg")
    edit_item(index, 10, thumb="thumbs/small.jpg")
    ix = GalleryIndex(index)
    for i, (suffix, kind) in enumerate(formats.items()):
        data = ix.read_image(i)
        assert data == (gallery / f"photo.{suffix}").read_bytes() and Image.open(io.BytesIO(data)).format == kind
        assert image_type(data) == f"image/{kind.lower()}"
    assert image_type(b"MM\x00*\x00\x00\x00\x08") == "image/tiff" and image_type(b"RIFF0000WAVE") is None
    files = GalleryFiles(ix, tmp_path / "copies")
    assert Path(files.display(10)).read_bytes() == (index / "thumbs" / "small.jpg").read_bytes()
    assert Path(files.original(10)).read_bytes() == (gallery / ix.relative_path(10)).read_bytes()
    assert Path(files.display(10)).name == Path(ix.relative_path(10)).name  # the gallery's own file name
    with pytest.raises(GalleryFileError, match="no such image"):
        ix.read_image(len(ix))
