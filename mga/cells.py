"""A photo's global token split over its token cells: what a match's explanation spreads over the photo
(mga.explain). Computed from one forward's tokens, only when an explanation asks for it (CellSplit)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbones import gem_cells


def global_cells(model: nn.Module, trained: tuple, anchor: tuple | None) -> torch.Tensor:
    """Each token cell's share of the global token [trained ; anchor] (B, N, D), summing over the cells to it.

    GeM is positively homogeneous of degree 1 in its cells (their weights held fixed), so a pooled channel splits
    exactly over the cells by their share of its p-th powers (Euler); the projection is linear, its bias spread by
    each cell's share of the pooled descriptor; a unit vector's split is its unnormalised one over its norm.
    `trained`: (GeM descriptor, tokens, cell weights or None); `anchor`: (tokens, cell weights or None)."""
    cfg, backbone = model.config, model.backbone
    g0, tokens, weights = trained
    if backbone.spec.kind == "cnn":
        pooled, share = gem_cells(tokens, weights, backbone.gem_p)
    else:  # a ViT's class token is no pool of its cells: spread evenly, it shows no region
        n = tokens.shape[1]
        pooled = g0.float()[:, None, :].expand(-1, n, -1) / n
        share = pooled.new_full(pooled.shape[:2], 1.0 / n)
    proj = model.global_proj
    h = pooled @ proj.weight.float().T + share[..., None] * proj.bias.float()
    cells = h / h.sum(1).norm(dim=-1)[:, None, None]
    if anchor is None:
        return cells
    a_cells, _ = gem_cells(*anchor, model.anchor.gem_p)
    a_cells = a_cells / a_cells.sum(1).norm(dim=-1)[:, None, None]
    w, total = cfg.anchor, cfg.global_weight
    return torch.cat([cells * (cfg.alpha * (1 - w) / total) ** 0.5, a_cells * (w / total) ** 0.5], dim=-1)


@dataclass(frozen=True)
class CellSplit:
    """One forward's inputs to `global_cells`, kept so that the global token is split over the cells only when an
    explanation asks for it: most searches open no result past the first."""

    model: nn.Module  # the MGAModel that encoded the photo (its projection, anchor and config)
    trained: tuple  # (GeM descriptor, tokens, cell weights or None)
    anchor: tuple | None  # (tokens, cell weights or None)

    @torch.inference_mode()
    def cells(self) -> torch.Tensor:
        """Each token cell's share of the global token (B, N, D), on the CPU."""
        return global_cells(self.model, self.trained, self.anchor).cpu()
