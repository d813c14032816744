"""The gallery files the UI hands to Gradio: copies of the images a search shows, made from paths the index has
checked (mga.index: inside the gallery's root, no link out of it), in a folder of the app's own. (API clients
fetch the same checked files from the app's own `/gallery` route.)

Gradio serves its cache and the folders named in `allowed_paths`; handing it a gallery root there would serve
every file below it (and a crafted root, the whole disk). Copies keep the gallery, the index and the weights off
the network, and the file names a visitor sees are the gallery's own.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path

from mga.index import GalleryIndex


class GalleryFiles:
    """Copies of gallery images, one per image and kind, kept for the app's lifetime (at most the gallery) and
    removed with it."""

    def __init__(self, index: GalleryIndex, folder: str | Path | None = None):
        self.index = index
        if not folder:
            folder = tempfile.mkdtemp(prefix="mga-gallery-")
            # copies of the app's own go with it (at exit too: a stop, a Space restart); a caller's folder stays
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        self.folder = Path(folder)

    def display(self, i: int) -> str:
        """Image i as results show it (its thumbnail where the index has one)."""
        return self._copy(self.index.display_path(i), i, "display")

    def original(self, i: int) -> str:
        """Image i itself (for "more like this")."""
        return self._copy(self.index.image_path(i), i, "original")

    def _copy(self, source: Path, i: int, kind: str) -> str:
        dst = self.folder / kind / str(i) / Path(self.index.relative_path(i)).name
        if not dst.exists():  # copied once; searches copying it at the same moment each rename a whole file
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{uuid.uuid4().hex}{dst.suffix}")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dst)
        return str(dst)
