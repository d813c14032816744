"""Attention-based Token Alignment (ATA): similarity of two garments at two granularities.

s(q, x) = a * cos(g_q, g_x) + (1 - a) * sum_k w_k sum_j pi_kj cos(F_qk, F_xj),
pi_k = softmax_j(cos(F_qk, F_xj) / tau).

Part k of the query may match any part j of the candidate (a back view against a front view, a crop),
softly, instead of assuming part k always lands on part k as the coarse embedding does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Alignment:
    """ATA between Q queries and X candidates: scores (Q, X), per-part contributions (Q, X, K),
    and the soft assignment pi (Q, X, K, K) of query parts to candidate parts. scores = global_term +
    anchor_term + the contributions' sum; anchor_term is the pretrained descriptor's share (training.anchor; zeros
    here, MGAModel.align_tokens splits it off the global term)."""

    scores: torch.Tensor
    contributions: torch.Tensor
    assignment: torch.Tensor
    global_term: torch.Tensor
    anchor_term: torch.Tensor


def align(
    g_q: torch.Tensor,
    parts_q: torch.Tensor,
    g_x: torch.Tensor,
    parts_x: torch.Tensor,
    part_weights: torch.Tensor,
    alpha: float,
    tau: float,
) -> Alignment:
    """All inputs L2-normalised: g (Q|X, D), parts (Q|X, K, D), part_weights (K,) summing to 1."""
    g_q, parts_q, g_x, parts_x = (t.float() for t in (g_q, parts_q, g_x, parts_x))
    global_term = alpha * (g_q @ g_x.T)  # (Q, X)
    cos = torch.einsum("qkd,xjd->qxkj", parts_q, parts_x)  # (Q, X, K, K)
    # softmax over j, spelled out: torch's CPU softmax over an innermost dim of K elements is several times slower
    logits = cos / tau
    pi = (logits - logits.amax(-1, keepdim=True).detach()).exp()
    pi = pi / pi.sum(-1, keepdim=True)
    part_sim = (pi * cos).sum(-1)  # (Q, X, K)
    contributions = (1 - alpha) * part_weights.float() * part_sim
    return Alignment(global_term + contributions.sum(-1), contributions, pi, global_term, torch.zeros_like(global_term))

