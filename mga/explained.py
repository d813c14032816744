"""A search's matches explained when they are opened, not when they are found: each match's score spread over the
query's cells and over the view that matched (mga.explain), computed on demand and once per match.

A search keeps what splits its query's global token over the cells (mga.cells.CellSplit) in a store of the last
QUERIES_KEPT searches, whatever the number of sessions; a match of an older search is explained from its query
photo encoded again, its cells pinned to the global token the search scored with, so that its map still sums to
the score.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
from PIL import Image

from .cells import CellSplit
from .explain import WHOLE, ScoreMaps, moved_attention, pinned, score_maps, to_image_frame
from .imageio import ImageSource, load_image
from .matches import Match, SearchResult
from .model import Encoding
from .transforms import working_side
from .views import crop

HEATMAP_MAX_SIDE = 1024  # heatmaps of bigger images are computed at this longest side (aspect kept)
# Searches whose query cells an engine keeps (under 1 MB each: the last backbone tokens), for any number of visitors.
QUERIES_KEPT = 16

# the query as searched, or what reads it (called only when its cells are no longer kept)
QueryPhoto = ImageSource | Callable[[], ImageSource]


class KeptQueries:
    """The last QUERIES_KEPT searches' query cells and part maps, by query id (SearchResult.query_id). Thread-safe;
    the cells are computed from the kept CellSplit the first time a match of that search is explained."""

    def __init__(self, size: int = QUERIES_KEPT):
        self.size = size
        self._kept: OrderedDict[int, tuple[CellSplit | np.ndarray, np.ndarray]] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, split: CellSplit, q: Encoding) -> int:
        with self._lock:
            qid = next(self._ids)
            self._kept[qid] = (split, q.attn[0].numpy())
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return qid

    def cells(self, qid: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(cells (N, D), part maps (K, h, w)) of a kept search; None once it has left the store."""
        with self._lock:
            kept = self._kept.get(qid)
        if kept is None:
            return None
        split, attn = kept
        if isinstance(split, CellSplit):  # first explanation of this search: split once, drop the tokens
            split = split.cells()[0].numpy()
            with self._lock:
                if qid in self._kept:
                    self._kept[qid] = (split, attn)
        return split, attn


class ExplainsMatches:
    """SearchEngine's explanations (a mixin: it uses the engine's model, index, `encode` and `gallery_image`)."""

    kept: KeptQueries

    def query_maps(self, res: SearchResult, m: Match, photo: QueryPhoto | None = None) -> ScoreMaps | None:
        """The match's score spread over the query's cells, term by term (computed once per match): from the
        kept cells of its search, else from `photo` (the query as searched) encoded again. None for a search not
        explained, or one no longer kept when no photo is given."""
        if m.query_maps is None and res.query_id is not None:
            kept = self.kept.cells(res.query_id)
            if kept is None and photo is not None:
                kept = self._encoded_again(load_image(photo() if callable(photo) else photo), res.query_global)
            if kept is not None:
                cfg = self.model.config
                stored = self.index.global_[m.row].astype(np.float32)  # the token the score was computed with
                m.query_maps = score_maps(kept[0], stored, cfg.embed_dim, cfg.global_weight, m.contributions, kept[1])
        return m.query_maps

    def match_maps(self, res: SearchResult, m: Match) -> ScoreMaps:
        """The match's score spread over the cells of the view that matched, term by term: that view encoded
        again (one forward; its global token pinned to the stored one the score used), against the query's global
        token. Computed once per match; GalleryFileError or ImageError if the photo cannot be read."""
        if m.match_maps is None:
            # decoded as the index builder decoded it (index_builder.decode), then the view cut out
            side = working_side(self.model.config.image_size)
            view = crop(self.gallery_image(m.index, original=True, max_side=side), m.box)
            cells, attn = self._encoded_again(view, self.index.global_[m.row].astype(np.float32))
            attn = moved_attention(m.assignment, attn)  # the view's own maps (an index stores none)
            cfg = self.model.config
            m.match_maps = score_maps(cells, res.query_global, cfg.embed_dim, cfg.global_weight, m.contributions,
                                      attn)
        return m.match_maps

    def _encoded_again(self, image: Image.Image, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A photo's cells (N, D), pinned to sum to the global token its score was computed with (`scored`: a
        token stored in the index, or a query's from its search), and its part maps (K, h, w)."""
        enc, split = self.encode(image, cells=True)
        return pinned(split.cells()[0], scored), enc.attn[0].numpy()

    def query_heatmap(self, res: SearchResult, m: Match, term: str | int = WHOLE,
                      heatmap_max_side: int | None = HEATMAP_MAX_SIDE, photo: QueryPhoto | None = None
                      ) -> np.ndarray | None:
        """One term's map (mga.explain: WHOLE, OVERALL or a part) of the match on the query, in [0, 1] in the
        query's frame; None where `query_maps` is."""
        maps = self.query_maps(res, m, photo)
        if maps is None:
            return None
        w, h = res.query_size
        return to_image_frame(maps.term(term), w, h, self.model.config.image_size, heatmap_max_side)

    def match_heatmap(self, res: SearchResult, m: Match, term: str | int = WHOLE,
                      heatmap_max_side: int | None = HEATMAP_MAX_SIDE) -> np.ndarray | None:
        """The same on the match's photo (the view that matched, in the whole photo's frame); None for a search
        not explained."""
        if res.query_id is None:
            return None
        it, size = self.index.items[m.index], self.model.config.image_size
        return to_image_frame(self.match_maps(res, m).term(term), int(it.get("width") or size),
                              int(it.get("height") or size), size, heatmap_max_side, m.box)
