"""The gallery files the UI hands to Gradio: copies of the images a search shows, written from the bytes
`GalleryIndex.read_image` read and checked (an image file inside the gallery's root, or a thumbnail inside the
index; never a link out of them, a FIFO, a device or another kind of file), in a folder of the app's own. (API
clients fetch the same checked bytes from the app's own `/gallery` route.)

Gradio serves its cache and the folders named in `allowed_paths`; handing it a gallery root there would serve
every file below it (and a crafted root, the whole disk). Copies keep the gallery, the index and the weights off
the network, and the file names a visitor sees are the gallery's own.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path

from mga import GalleryFileError, GalleryIndex

__all__ = ["GalleryFiles", "GalleryFileError"]


class GalleryFiles:
    """Copies of gallery images, one per image and kind, kept for the app's lifetime (at most the gallery) and
    removed with it. An image that cannot be served (missing, or refused by read_image) raises GalleryFileError,
    whose message names it by number and gallery path only: a caller leaves that one result out."""

    def __init__(self, index: GalleryIndex, folder: str | Path | None = None):
        self.index = index
        if not folder:
            folder = tempfile.mkdtemp(prefix="mga-gallery-")
            # copies of the app's own go with it (at exit too: a stop, a Space restart); a caller's folder stays
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        self.folder = Path(folder)

    def display(self, i: int) -> str:
        """Image i as results show it (its thumbnail where the index has one)."""
        return self._copy(i, True, "display")

    def original(self, i: int) -> str:
        """Image i itself (for "more like this")."""
        return self._copy(i, False, "original")

    def is_original(self, i: int, path: str | Path) -> bool:
        """Whether the file at `path` holds image i's bytes as `original` copied them (the photo box's copy of it:
        "more like this" searches that photo, not one the shopper sent since)."""
        copy = Path(self._path(i, "original"))
        try:
            return copy.exists() and filecmp.cmp(copy, path, shallow=False)
        except OSError:
            return False

    def _path(self, i: int, kind: str) -> str:
        return str(self.folder / kind / str(i) / Path(self.index.relative_path(i)).name)

    def _copy(self, i: int, display: bool, kind: str) -> str:
        path = self._path(i, kind)
        if not os.path.exists(path):  # copied once; searches copying it at the same moment each rename a whole file
            dst = Path(path)
            data = self.index.read_image(i, display)  # checked on this read: GalleryFileError
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{uuid.uuid4().hex}{dst.suffix}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
        return path
