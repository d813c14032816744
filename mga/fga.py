"""Fine-Granular Aggregator (FGA): K learnable part queries gather detail patterns from the patch tokens.

Each layer: the parts cross-attend to the tokens (this attention, averaged over heads, is the part's
heatmap), then attend to each other (so parts can divide the garment between them), then an FFN.
"""
from __future__ import annotations

import torch
from torch import nn


class FGALayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, parts: torch.Tensor, tokens: torch.Tensor,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.norm_kv(tokens)
        mask = None
        if bias is not None:  # (B, N) added to every part's and head's attention logits
            b, n = bias.shape
            mask = bias[:, None, None, :].expand(b, self.cross.num_heads, parts.shape[1], n)
            mask = mask.reshape(-1, parts.shape[1], n)
            mask = mask.to(kv.dtype)
        gathered, attn = self.cross(self.norm_q(parts), kv, kv, need_weights=True, average_attn_weights=True,
                                    attn_mask=mask)
        parts = parts + gathered
        q = self.norm_self(parts)
        parts = parts + self.self_attn(q, q, q, need_weights=False)[0]
        parts = parts + self.ffn(self.norm_ffn(parts))
        return parts, attn


class FineGranularAggregator(nn.Module):
    """tokens (B, N, D) -> part tokens (B, K, D) and part attention maps (B, K, N), rows summing to 1. An
    optional bias (B, N) on the attention logits steers every part towards some tokens (the figure's)."""

    def __init__(self, dim: int, num_parts: int, heads: int = 4, layers: int = 1):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_parts, dim))  # unit scale: distinct parts from the start
        self.layers = nn.ModuleList(FGALayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attn = tokens.new_zeros(0)
        for layer in self.layers:
            parts, attn = layer(parts, tokens, bias)
        return self.norm(parts), attn


def diversity_loss(attn: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between different parts' attention maps: pushes parts onto different regions."""
    a = nn.functional.normalize(attn.float(), dim=-1)
    gram = a @ a.transpose(1, 2)
    k = gram.shape[-1]
    off = gram - torch.eye(k, device=gram.device) * gram
    return off.pow(2).sum(dim=(1, 2)).mean() / (k * (k - 1))
