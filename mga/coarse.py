"""Coarse search over an opened index (mga.index.GalleryIndex): FAISS finds candidate views by their coarse
embeddings, re-scored exactly where FAISS's scores are approximate, and an image scores as its best view."""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np
import torch

EXACT_SUBSET_MAX = 20_000  # a category this small is searched exactly instead of over-fetching from FAISS


def rows_float(array: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Some rows of a (memory-mapped, often fp16, writable) array as a float32 tensor. torch gathers the rows
    faster than numpy's fancy indexing of a memory map, and casts fp16 much faster (docs/benchmarks.md). Rows
    stored in another form (mga.stored_rows: coded tokens, embeddings rebuilt from the tokens) read themselves."""
    if not isinstance(array, np.ndarray):
        return array.rows(rows)
    index = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    return torch.from_numpy(array).index_select(0, index).float()


def best_per_image(scores: np.ndarray | torch.Tensor, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of views in adjacent groups, `counts` (each >= 1) views per image -> each image's best score and the
    position of its best view, the first on ties: numpy's segment reductions, much faster than scatters on the
    views of one search."""
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    starts = np.cumsum(counts) - counts
    best = np.maximum.reduceat(scores, starts)
    at_best = np.flatnonzero(scores == np.repeat(best, counts))
    return best, at_best[np.searchsorted(at_best, starts)]


def _top_images(images: np.ndarray, best: np.ndarray, best_rows: np.ndarray, m: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The m best of some images given each one's best-view score and row: (images, scores, rows), by score,
    ties by image (deterministic)."""
    order = np.lexsort((images, -best))[:m]
    return images[order], best[order], best_rows[order]


class CoarseSearch:
    """Coarse search for GalleryIndex, which provides the FAISS index (`faiss`, `index_type`, `ef_search`,
    `nprobe`, `refine`), the stored `embeddings`, `owner`, `first_row`, `views`, `view_rows`, `view_count` and
    `category_images`."""

    def _faiss_search(self, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top m views by FAISS, with exact scores, best first. IVF-PQ's own scores are
        approximate: it returns `refine` x m candidates, re-scored with the stored embeddings."""
        import faiss

        m = min(m, self.views)
        if self.index_type == "hnsw":  # IndexHNSWFlat: exact inner products of the stored vectors
            d, idx = self.faiss.search(q, m, params=faiss.SearchParametersHNSW(efSearch=max(self.ef_search, m)))
        elif self.index_type == "ivfpq":
            fetch = min(self.views, m * self.refine)
            _, idx = self.faiss.search(q, fetch, params=faiss.SearchParametersIVF(nprobe=self.nprobe))
            rows = idx[0][idx[0] >= 0]
            scores = self._scores(q, rows)
            order = np.argsort(-scores, kind="stable")
            return scores[order], rows[order]
        else:
            return self._flat_search(q, m)
        found = idx[0] >= 0
        return d[0][found], idx[0][found]

    @cached_property
    def _flat_rows(self) -> torch.Tensor:
        """The flat FAISS index's vectors, shared with it (it lives as long as the index does)."""
        import faiss

        n, d = self.faiss.ntotal, self.faiss.d
        return torch.from_numpy(faiss.rev_swig_ptr(self.faiss.get_xb(), n * d).reshape(n, d))

    def _flat_search(self, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top m of a flat index, its products in torch: FAISS scans one query's rows on one thread,
        torch on both (half the time, docs/benchmarks.md), and its threads are the ones a search keeps busy."""
        top = torch.topk(self._flat_rows @ torch.from_numpy(q[0]), m)
        return top.values.numpy(), top.indices.numpy()

    def _scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact coarse inner products of query q (1, E) with some rows. In torch, whose threads the rest of a
        search uses: numpy's own BLAS threads, left spinning after a product, slowed the ATA that follows ~2x at
        the median and ~10x at p95 (bench_search, 2 cores)."""
        return (rows_float(self.embeddings, rows) @ torch.from_numpy(q[0])).numpy()

    def coarse_search(self, q: np.ndarray, m: int, category: str | Sequence[str] | None = None,
                      full_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top m images by the coarse inner product of their best view, optionally within one category: FAISS
        finds candidate views (`_faiss_search`, exact scores), an image scores as the best of its views found
        (`full_only`: its full photo, the first of its views). Returns (images, scores, best view rows), best
        first. `category` may be several (any of them)."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        allowed = None
        if category:
            allowed = self.category_images(category)
            if len(allowed) == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            if len(allowed) <= EXACT_SUBSET_MAX or self.index_type == "flat" and len(allowed) * 4 > len(self):
                return self._exact(q, allowed, m, full_only)
        # an image's best views come first and its other views far behind, so 2 views per wanted image usually
        # give m images; if not, fetch 4x more. A flat index scans every view whatever it returns, so it returns
        # enough views for m images of average view count at once; so does a search of full photos only, where
        # one view in views_per_image counts.
        views_per_image = -(-self.views // max(1, len(self)))
        fetch_per_image = views_per_image if self.index_type == "flat" or full_only else 2
        fetch = fetch_per_image * m * (1 if allowed is None else max(2, len(self) // len(allowed)))
        while True:  # over-fetch until m images (of the category) come back, or everything was searched
            scores, rows = self._faiss_search(q, fetch)
            owners = self.owner[rows]
            keep = np.ones(len(rows), dtype=bool)
            if allowed is not None:
                keep &= np.isin(owners, allowed)
            if full_only:
                keep &= self.first_row[owners] == rows
            scores, rows, owners = scores[keep], rows[keep], owners[keep]
            images, first = np.unique(owners, return_index=True)
            if len(images) >= m or fetch >= self.views:
                # exact scores, best first: an image's first returned view is the best of its views found, which
                # a flat index finds all of. An approximate index may miss an image's best view; it then scores
                # as its best view found (its recall against exact search: bench_search). Scoring every view of
                # the candidate images instead would cost a large share of a search.
                return _top_images(images, scores[first], rows[first], m)
            fetch = min(self.views, fetch * 4)

    def _exact(self, q: np.ndarray, images: np.ndarray, m: int, full_only: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images = np.sort(np.asarray(images, dtype=np.int64))  # ascending reads from the memory map
        if len(images) == 0:
            return images, np.zeros(0, dtype=np.float32), images
        rows = self.first_row[images] if full_only else self.view_rows(images)
        counts = np.ones(len(images), dtype=np.int64) if full_only else self.view_count(images)
        best, pick = best_per_image(self._scores(q, rows), counts)
        return _top_images(images, best, rows[pick], m)

