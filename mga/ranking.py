"""The one ranking pipeline, for the app and for evaluation alike: coarse search, ATA, the category vote.

An opened index (mga.index.GalleryIndex) and a query's encoding give the candidates in order: FAISS finds the top
M images by the coarse embedding of their best view (mga.coarse; a whole-garment query sees full photos only),
ATA re-scores every view of the top `rerank_top` (each image scores as its best view), the category vote orders
them, and the rest keep their coarse order. `SearchEngine` turns a ranking into explained results; evaluation
(`python -m training.evaluate`) reads recall off the same ranking, so the published numbers are the app's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .category_vote import category_vote
from .closeup import whole_garment
from .coarse import best_per_image
from .config import CATEGORY_VOTE, DEFAULT_RERANK_TOP, DEFAULT_VIEWS
from .model import Encoding, MGAModel


@dataclass
class Ranked:
    """The coarse candidates (`images`, best first by `coarse` score, `whole`: full photos only) after ATA:
    `order` ranks them (positions into `images`); each scores as its best view (`best_ata` for the first
    `n_rerank`, its coarse score after) plus its category's `bonus` in the vote (0 past `n_rerank`); `pick`
    is that view's position in `rows`, the rows ATA aligned (`alignment`)."""

    images: np.ndarray
    coarse: np.ndarray
    whole: bool
    order: np.ndarray
    n_rerank: int
    best_ata: np.ndarray
    pick: np.ndarray
    rows: np.ndarray
    alignment: Any
    bonus: np.ndarray
    timings: dict[str, float]  # search_ms: the coarse search, rerank_ms: ATA and the vote

    def score(self, j: int) -> float:
        """Candidate j's score: its ATA score if it was re-ranked, else its coarse score."""
        return float(self.best_ata[j] if j < self.n_rerank else self.coarse[j])

    def ranked_images(self) -> np.ndarray:
        """The index's images, best first."""
        return self.images[self.order]


def distinct(keys: Sequence[Any], order: np.ndarray) -> np.ndarray:
    """`order` keeping the first (best) of each key: one result per product."""
    seen: set = set()
    return np.array([j for j, key in zip(order, keys) if not (key in seen or seen.add(key))], dtype=np.int64)


def rank(model: MGAModel, index, closeup, q: Encoding, m: int, category: str | Sequence[str] | None = None,
         rerank_top: int = DEFAULT_RERANK_TOP, views: str = DEFAULT_VIEWS,
         vote: float = CATEGORY_VOTE) -> Ranked:
    """The top max(m, rerank_top) images of `index` for one encoded query, ranked coarse to fine. `closeup`: the
    model's close-up detector (mga.closeup.detector), which `views` consults; `category`: one or several (any of
    them); `vote`: the category vote's weight (0: off)."""
    t0 = time.perf_counter()
    whole = bool(whole_garment(closeup, q.embedding[:1], views)[0])
    images, coarse, best_rows = index.coarse_search(q.embedding[0].float().numpy(), max(rerank_top, m), category,
                                                    full_only=whole)
    t1 = time.perf_counter()
    if len(images) == 0:
        nothing = np.zeros(0, dtype=np.int64)
        return Ranked(images, coarse, whole, nothing, 0, np.zeros(0), nothing, nothing, None, np.zeros(0),
                      {"search_ms": (t1 - t0) * 1e3, "rerank_ms": 0.0})
    n_rerank = min(rerank_top, len(images))
    top = images[:n_rerank]
    rows = np.concatenate([index.first_row[top] if whole else index.view_rows(top), best_rows[n_rerank:]])
    with torch.inference_mode():
        al = model.align_tokens(q.global_[:1], q.parts[:1], *index.tokens(rows))
    counts = np.ones(len(images), dtype=np.int64)
    if not whole:
        counts[:n_rerank] = index.view_count(top)
    best_ata, pick = best_per_image(al.scores[0], counts)
    voted = category_vote(best_ata[:n_rerank], index.category_keys[top], vote)
    head = np.argsort(-voted, kind="stable")  # ties keep their coarse order
    order = np.concatenate([head, np.arange(n_rerank, len(images))]).astype(np.int64)
    bonus = np.zeros(len(images))
    bonus[:n_rerank] = voted - best_ata[:n_rerank]
    return Ranked(images, coarse, whole, order, n_rerank, best_ata, pick, rows, al, bonus,
                  {"search_ms": (t1 - t0) * 1e3, "rerank_ms": (time.perf_counter() - t1) * 1e3})
