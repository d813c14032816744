"""Coarse-to-fine ranking: inner product over coarse embeddings for the top M, then ATA re-ranks them."""
from __future__ import annotations

import torch

from .model import Encoding, MGAModel

DESCRIPTORS = ("coarse", "global")


def coarse_scores(q: Encoding, g: Encoding, descriptor: str = "coarse") -> torch.Tensor:
    """(Q, G) inner products of the coarse embeddings, or of the global tokens alone (the ablation)."""
    if descriptor == "global":
        return q.global_.float() @ g.global_.float().T
    if descriptor == "coarse":
        return q.embedding.float() @ g.embedding.float().T
    raise ValueError(f"descriptor must be one of {DESCRIPTORS}")


@torch.inference_mode()
def rank(model: MGAModel, q: Encoding, g: Encoding, descriptor: str = "coarse", rerank_top: int = 0) -> torch.Tensor:
    """(Q, G) gallery indices, best first. With rerank_top=M > 0 the coarse top M are re-ordered by ATA
    and stay ahead of the rest, which keep their coarse order."""
    order = coarse_scores(q, g, descriptor).argsort(dim=1, descending=True)
    m = min(rerank_top, g.global_.shape[0])
    if m <= 0:
        return order
    for qi in range(len(q)):
        cand = order[qi, :m]
        ata = model.align(q[qi], g[cand]).scores[0]
        order[qi, :m] = cand[ata.argsort(descending=True)]
    return order
