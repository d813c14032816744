"""Metric losses over similarity matrices, so one loss serves the global, coarse and ATA similarities."""
from __future__ import annotations

import torch


def multi_similarity_loss(sim: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 50.0,
                          base: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """Multi-Similarity loss (Wang et al., CVPR 2019) with its hard-pair mining, on a (B, B) similarity."""
    sim = sim.float()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    pos_mask, neg_mask = same & ~eye, ~same
    losses = []
    for i in range(len(labels)):
        pos, neg = sim[i][pos_mask[i]], sim[i][neg_mask[i]]
        if len(pos) == 0 or len(neg) == 0:
            continue
        neg = neg[neg + margin > pos.min()]
        pos = pos[pos - margin < sim[i][neg_mask[i]].max()]
        if len(neg) == 0 or len(pos) == 0:
            continue
        pos_term = torch.log1p(torch.exp(-alpha * (pos - base)).sum()) / alpha
        neg_term = torch.log1p(torch.exp(beta * (neg - base)).sum()) / beta
        losses.append(pos_term + neg_term)
    if not losses:
        return sim.sum() * 0.0
    return torch.stack(losses).mean()
