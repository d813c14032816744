"""What the app makes of a search (ui.results) when the gallery lets it down: a photo gone after the index was built
is left out of the results, said in the log, and never fails the search or names a server path."""
from __future__ import annotations

import logging
import shutil

from mga.config import ASSETS_DIR
from ui.details import match_images, match_markdown
from ui.results import run_search
from ui.settings import load_engine

EXAMPLE = ASSETS_DIR / "examples" / "pants-viktor-lumatech-pant.jpg"


def test_a_gallery_photo_gone_is_left_out_of_the_results_and_logged(tmp_path, caplog):
    shutil.copytree(ASSETS_DIR / "demo-index", tmp_path / "demo-index")
    shutil.copytree(ASSETS_DIR / "demo-gallery", tmp_path / "demo-gallery")
    loaded = load_engine(None, tmp_path / "demo-index")
    before = run_search(loaded, EXAMPLE, k=5)
    gone = before.result.matches[0]
    index = loaded.engine.index
    (index.roots[0] / gone.image).unlink()
    fresh = load_engine(None, tmp_path / "demo-index")  # a new app: no copy of the photo made before it went
    with caplog.at_level(logging.WARNING):
        after = run_search(fresh, EXAMPLE, k=5)
    kept = [m.image for m in after.result.matches]
    assert gone.image not in kept and kept == [m.image for m in before.result.matches[1:]]
    assert [m.rank for m in after.result.matches] == list(range(1, len(kept) + 1))
    assert len(after.gallery) == len(kept)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert gone.image in logged and str(tmp_path) not in logged
    first = after.result.matches[0]  # the rest still open, words and photos
    assert match_markdown(after, first) and all(match_images(fresh, after, first))
