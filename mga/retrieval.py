"""Coarse-to-fine ranking: inner product over coarse embeddings for the top M, then ATA re-ranks them.

The gallery side may hold several views per image (mga.views: the full photo and zoom windows); `owner[v]` is
the image of view v, and an image scores as its best view. Without `owner` every row is its own image. A query
flagged `whole` (mga.closeup: a photo of a whole garment) is searched among each image's full photo only. Given the
gallery images' categories, the re-ranked head is ordered after mga.category_vote: the query's kind first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .category_vote import vote_order
from .config import CATEGORY_VOTE
from .model import Encoding, MGAModel

DESCRIPTORS = ("coarse", "global")


def coarse_scores(q: Encoding, g: Encoding, descriptor: str = "coarse") -> torch.Tensor:
    """(Q, G) inner products of the coarse embeddings, or of the global tokens alone (the ablation)."""
    if descriptor == "global":
        return q.global_.float() @ g.global_.float().T
    if descriptor == "coarse":
        return q.embedding.float() @ g.embedding.float().T
    raise ValueError(f"descriptor must be one of {DESCRIPTORS}")


def best_view(scores: torch.Tensor, owner: torch.Tensor, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view scores (Q, V) -> per-image scores (Q, N), the max over the image's views, and which view gave
    it (the first one on ties; -inf and -1 for an image without views here)."""
    q, v = scores.shape
    own = owner.expand(q, v)
    best = torch.full((q, n_images), float("-inf"), dtype=scores.dtype).scatter_reduce(1, own, scores, "amax")
    view_ids = torch.arange(v).expand(q, v)
    first = torch.where(scores >= best.gather(1, own), view_ids, v)
    which = torch.full((q, n_images), v, dtype=torch.long).scatter_reduce(1, own, first, "amin")
    return best, torch.where(which == v, -1, which)


def full_views(owner: torch.Tensor) -> torch.Tensor:
    """(V,) True for each image's first view, its full photo (an image's views are adjacent, full photo first)."""
    return torch.cat([torch.ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])


@torch.inference_mode()
def rank(model: MGAModel, q: Encoding, g: Encoding, descriptor: str = "coarse", rerank_top: int = 0,
         owner: torch.Tensor | None = None, whole: torch.Tensor | None = None,
         categories: Sequence[str] | None = None, vote: float = CATEGORY_VOTE) -> torch.Tensor:
    """(Q, N) gallery image indices, best first. With rerank_top=M > 0 the coarse top M are re-ordered by ATA
    (each image by its best view) and stay ahead of the rest, which keep their coarse order. `whole` (Q,) bool:
    the queries that see full photos only. `categories` (N,): each image's, for the category vote of weight
    `vote` over the re-ranked head (none without them)."""
    owner = torch.arange(len(g)) if owner is None else owner
    n = int(owner.max()) + 1
    full = full_views(owner)
    whole = torch.zeros(len(q), dtype=torch.bool) if whole is None else whole
    per_view = coarse_scores(q, g, descriptor).masked_fill(whole[:, None] & ~full[None, :], float("-inf"))
    scores, _ = best_view(per_view, owner, n)
    order = scores.argsort(dim=1, descending=True)
    m = min(rerank_top, n)
    if m <= 0:
        return order
    kinds = np.asarray(categories) if categories is not None and vote != 0 else None  # once, not per query
    for qi in range(len(q)):
        cand = order[qi, :m]
        rows = torch.nonzero(torch.isin(owner, cand) & (full | ~whole[qi])).flatten()
        ata = model.align(q[qi], g[rows]).scores
        per_image, _ = best_view(ata, owner[rows], n)
        if kinds is None:
            order[qi, :m] = cand[per_image[0, cand].argsort(descending=True)]
        else:
            order[qi, :m] = cand[torch.from_numpy(vote_order(per_image[0, cand].numpy(), kinds[cand.numpy()], vote))]
    return order
