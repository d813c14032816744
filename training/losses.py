"""Metric losses: multi-similarity over similarity matrices, so one loss serves the global, coarse and ATA
similarities; Proxy-Anchor over embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_similarity_loss(sim: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 50.0,
                          base: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """Multi-Similarity loss (Wang et al., CVPR 2019) with its hard-pair mining, on a (B, B) similarity of a
    labelled batch."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    return multi_similarity_masked(sim, same & ~eye, ~same, alpha, beta, base, margin)


def multi_similarity_masked(sim: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor, alpha: float = 2.0,
                            beta: float = 50.0, base: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """Multi-Similarity on any (A, B) similarity, each anchor row's positives and negatives given as masks (the
    anchors and the photos they are compared with may be different sets). Masks instead of a loop over anchors:
    no host-device sync per anchor, which on a GPU shared by several runs cost more than the whole forward pass."""
    sim = sim.float()
    hardest_pos = torch.where(pos_mask, sim, torch.inf).min(dim=1, keepdim=True).values
    hardest_neg = torch.where(neg_mask, sim, -torch.inf).max(dim=1, keepdim=True).values
    neg_keep = neg_mask & (sim + margin > hardest_pos)
    pos_keep = pos_mask & (sim - margin < hardest_neg)
    pos_term = torch.log1p(torch.where(pos_keep, torch.exp(-alpha * (sim - base)), 0.0).sum(1)) / alpha
    neg_term = torch.log1p(torch.where(neg_keep, torch.exp(beta * (sim - base)), 0.0).sum(1)) / beta
    valid = pos_keep.any(1) & neg_keep.any(1)
    return torch.where(valid, pos_term + neg_term, 0.0).sum() / valid.sum().clamp(min=1)


class ProxyAnchorLoss(nn.Module):
    """Proxy-Anchor loss (Kim et al., CVPR 2020): one learnable proxy per training item pulls its images
    together and pushes the rest away, which gives every batch the structure of the whole training set."""

    def __init__(self, num_classes: int, dim: int, alpha: float = 32.0, delta: float = 0.1):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, dim) * (2.0 / dim) ** 0.5)
        self.alpha, self.delta = alpha, delta

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):  # exp(alpha * s) overflows half precision
            sim = F.normalize(embeddings.float(), dim=-1) @ F.normalize(self.proxies.float(), dim=-1).T  # (B, C)
            pos = F.one_hot(labels, len(self.proxies)).bool()
            pos_sum = torch.where(pos, torch.exp(-self.alpha * (sim - self.delta)), 0.0).sum(0)
            neg_sum = torch.where(pos, 0.0, torch.exp(self.alpha * (sim + self.delta))).sum(0)
        with_pos = pos.any(0)
        return torch.log1p(pos_sum[with_pos]).sum() / with_pos.sum() + torch.log1p(neg_sum).sum() / len(self.proxies)
