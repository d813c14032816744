"""MGAModel: image batch -> global token, part tokens, part attention maps and the coarse embedding.

Saved and loaded the Hugging Face way (config.json + model.safetensors) through PyTorchModelHubMixin.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image
from torch import nn

from .ata import Alignment, align
from .backbones import TokenBackbone, shared_stages
from .cells import CellSplit
from .config import MGAConfig
from .devices import autocast, forward_batch
from .fga import FineGranularAggregator
from .transforms import EvalTransform

# config fields fitted after training or recording provenance: not the model's identity (a figure head shows in
# the weights themselves)
FITTED_LATER = ("extra", "part_names", "confidence", "closeup", "figure_head")


def skeleton(config: MGAConfig) -> "MGAModel":
    """The model `config` describes on the meta device: every tensor's shape, none of their memory (a config of
    billions of numbers costs nothing here)."""
    with torch.device("meta"):
        return MGAModel(config)


@dataclass
class Encoding:
    """What one forward pass gives for a batch of B images (all L2-normalised where it applies)."""

    global_: torch.Tensor  # (B, D)
    parts: torch.Tensor  # (B, K, D)
    attn: torch.Tensor  # (B, K, h, w) part attention maps on the token grid; each map sums to 1
    embedding: torch.Tensor  # (B, D * (K + 1)) coarse embedding for FAISS inner-product search
    figure: torch.Tensor | None = None  # (B, h, w) figure logits (models with a figure head, while training)

    def __len__(self) -> int:
        return self.global_.shape[0]

    def __getitem__(self, idx: int | slice | torch.Tensor) -> "Encoding":
        """Select images; an int keeps the batch dimension."""
        idx = slice(idx, idx + 1) if isinstance(idx, int) else idx
        figure = None if self.figure is None else self.figure[idx]
        return Encoding(self.global_[idx], self.parts[idx], self.attn[idx], self.embedding[idx], figure)

    def to(self, *args, **kwargs) -> "Encoding":
        figure = None if self.figure is None else self.figure.to(*args, **kwargs)
        return Encoding(*(t.to(*args, **kwargs) for t in (self.global_, self.parts, self.attn, self.embedding)),
                        figure)

    @staticmethod
    def cat(parts: Sequence["Encoding"]) -> "Encoding":
        """Batches one after another; figure logits are kept when every batch has them."""
        figures = [e.figure for e in parts]
        figure = None if any(f is None for f in figures) else torch.cat(figures)
        return Encoding(*(torch.cat(ts) for ts in zip(*((e.global_, e.parts, e.attn, e.embedding) for e in parts))),
                        figure)


def coarse_embedding(g: torch.Tensor, parts: torch.Tensor, alpha: float) -> torch.Tensor:
    """[sqrt(a) g ; sqrt((1-a)/K) F_1 ; ...]: unit norm, and its inner product is
    a*cos(g, g') + (1-a)/K * sum_k cos(F_k, F'_k), the fixed-correspondence version of ATA."""
    k = parts.shape[1]
    return torch.cat([g * alpha**0.5, parts.flatten(1) * ((1 - alpha) / k) ** 0.5], dim=1)


def figure_gem(backbone, gem: torch.Tensor, tokens: torch.Tensor, figure: torch.Tensor) -> torch.Tensor:
    """A CNN's GeM over the figure alone (cells weighted by its probability); a ViT keeps its own `gem`."""
    return backbone.pool(tokens, figure) if backbone.spec.kind == "cnn" else gem


class MGAModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="mga",
    tags=["image-retrieval", "fashion", "mga"],
    license="osl-3.0",
):
    """Backbone -> (g0, tokens) -> projections -> FGA parts -> coarse embedding; ATA on top for re-ranking."""

    def __init__(self, config: dict | MGAConfig | None = None):
        super().__init__()
        cfg = config if isinstance(config, MGAConfig) else MGAConfig.from_dict(config or {})
        self.config = cfg
        self._hub_mixin_config = cfg  # save_pretrained writes this object: later edits (part names) are kept
        self.backbone = TokenBackbone(cfg.backbone, cfg.image_size, cfg.gem_p)
        c, d = self.backbone.num_features, cfg.embed_dim
        self.global_proj = nn.Linear(c, d)
        self.token_proj = nn.Sequential(nn.Linear(c, d), nn.LayerNorm(d))
        self.fga = FineGranularAggregator(d, cfg.num_parts, cfg.fga_heads, cfg.fga_layers)
        self.figure_head = nn.Linear(c, 1) if cfg.figure_head else None
        self.part_logits = nn.Parameter(torch.zeros(cfg.num_parts))
        self.anchor = TokenBackbone(cfg.backbone, cfg.image_size, cfg.gem_p).requires_grad_(False) \
            if cfg.anchor > 0 else None
        self.transform = EvalTransform(cfg.image_size, cfg.mean, cfg.std)
        self._shared: tuple[int, int] | None = None  # (id of the anchor, stages it shares): _shared_stages

    @classmethod
    def from_backbone(cls, config: MGAConfig) -> "MGAModel":
        """A fresh MGA model on a pretrained backbone (the start of training), its anchor pretrained too."""
        model = cls(config)
        for backbone in (model.backbone, model.anchor):
            if backbone is not None:
                backbone.load_pretrained()
        return model

    @property
    def embedding_width(self) -> int:
        """Numbers in the coarse embedding (Encoding.embedding): the global and part tokens, and with an anchor its
        GeM descriptor beside the global token (_with_anchor)."""
        return self.config.embedding_dim + (self.anchor.num_features if self.anchor is not None else 0)

    @property
    def part_weights(self) -> torch.Tensor:
        return torch.softmax(self.part_logits, dim=0)

    def forward(self, images: torch.Tensor, cells: bool = False) -> Encoding | tuple[Encoding, CellSplit]:
        """The encoding of a batch; with `cells`, also what splits the global token over the token cells
        (CellSplit.cells: (B, N, D), summing over the cells to `global_`)."""
        if self.anchor is None:
            (g0, tokens, (h, w)), anchor = self.backbone(images), None
        else:
            (g0, tokens, (h, w)), anchor = self._backbone_and_anchor(images)
        figure, bias, weights = None, None, None
        if self.figure_head is not None:
            figure = self.figure_head(tokens).float()[..., 0]  # (B, N) logits
            bias = F.logsigmoid(figure)
            weights = bias.exp()
            g0 = figure_gem(self.backbone, g0, tokens, weights)
        g = F.normalize(self.global_proj(g0).float(), dim=-1)
        if anchor is not None:
            a_gem, a_tokens, _ = anchor
            if self.config.anchor_pool == "figure":  # MGAConfig guarantees the figure head
                a_gem = figure_gem(self.anchor, a_gem, a_tokens, weights)
            g = self._with_anchor(g, a_gem)
        parts, attn = self.fga(self.token_proj(tokens), bias)
        parts = F.normalize(parts.float(), dim=-1)
        attn = attn.float().reshape(attn.shape[0], attn.shape[1], h, w)
        figure = figure.reshape(-1, h, w) if figure is not None and self.training else None
        enc = Encoding(g, parts, attn, coarse_embedding(g, parts, self.config.global_weight), figure)
        if not cells:
            return enc
        a_cells = None if anchor is None else (anchor[1], weights if self.config.anchor_pool == "figure" else None)
        return enc, CellSplit(self, (g0, tokens, weights), a_cells)

    @torch.inference_mode()
    def encode_cells(self, images: torch.Tensor) -> tuple[Encoding, CellSplit]:
        """Encode preprocessed images (one batch, in eval mode) with what splits their global token over the token
        cells (CellSplit.cells): what the explanation of a match spreads over the photo (mga.explain)."""
        if self.training:
            self.eval()
        enc, split = self(images.to(self.device), cells=True)
        return enc.to("cpu"), split

    def _backbone_and_anchor(self, images: torch.Tensor) -> tuple[tuple, tuple]:
        """The trained backbone's and the anchor's (GeM, tokens, grid), running the leading stages the two still
        share (the frozen stem and first blocks: same weights, both in eval mode) once."""
        ours, theirs = self.backbone.stages(), self.anchor.stages()
        if not ours:  # a ViT: no stages to share
            return self.backbone(images), self.anchor(images)
        shared = self._shared_stages(ours, theirs)
        x = images
        for stage in ours[:shared]:
            x = stage(x)
        mine, pretrained = x, x
        for stage in ours[shared:]:
            mine = stage(mine)
        for stage in theirs[shared:]:
            pretrained = stage(pretrained)
        return self.backbone.tokens(mine), self.anchor.tokens(pretrained)

    def _shared_stages(self, ours: list[nn.Module], theirs: list[nn.Module]) -> int:
        """shared_stages, remembered while the model stays in eval mode with this anchor (comparing the stages'
        weights costs about a millisecond a forward); train() and load_state_dict() forget it."""
        if self.training:
            return shared_stages(ours, theirs)
        if self._shared is None or self._shared[0] != id(self.anchor):
            self._shared = (id(self.anchor), shared_stages(ours, theirs))
        return self._shared[1]

    def load_state_dict(self, *args, **kwargs):
        self._shared = None
        return super().load_state_dict(*args, **kwargs)

    def _with_anchor(self, g: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """[sqrt(a (1-w) / W) g ; sqrt(w / W) GeM_pretrained], W = global_weight: unit norm, and W times its cosine
        is a (1-w) cos(g, g') + w cos(GeM, GeM'), so the anchor takes its share w from every similarity."""
        cfg = self.config
        anchor = F.normalize(anchor.float(), dim=-1)
        w, total = cfg.anchor, cfg.global_weight
        return torch.cat([g * (cfg.alpha * (1 - w) / total) ** 0.5, anchor * (w / total) ** 0.5], dim=-1)

    def train(self, mode: bool = True) -> "MGAModel":
        super().train(mode)
        self._shared = None
        if self.anchor is not None:  # frozen: its BatchNorm statistics stay the pretrained ones
            self.anchor.eval()
        return self

    def align(self, q: Encoding, x: Encoding) -> Alignment:
        """ATA between every query in q and every candidate in x."""
        return self.align_tokens(q.global_, q.parts, x.global_, x.parts)

    def align_tokens(self, g_q: torch.Tensor, parts_q: torch.Tensor, g_x: torch.Tensor,
                     parts_x: torch.Tensor) -> Alignment:
        """ATA from the tokens alone (what a search index loads for its candidates)."""
        weights = self.part_weights.to(g_q.device)  # encodings may live on the CPU, the model on a GPU
        if self.anchor is None:
            return align(g_q, parts_q, g_x, parts_x, weights, self.config.global_weight, self.config.tau)
        d = self.config.embed_dim  # the global token is [trained ; anchor] (_with_anchor): each half its own term
        al = align(g_q[:, :d], parts_q, g_x[:, :d], parts_x, weights, self.config.global_weight, self.config.tau)
        anchor_term = self.config.global_weight * (g_q[:, d:].float() @ g_x[:, d:].float().T)
        return replace(al, scores=al.scores + anchor_term, anchor_term=anchor_term)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, batch_size: int | None = None) -> Encoding:
        """Encode preprocessed images (B, 3, S, S): normalised floats, or uint8 pixels (`transform.pixels`)
        normalised here on the model's device; in eval mode, with the device's autocast, in forwards of at most
        `batch_size` (None: the device's, mga.devices.forward_batch). Returned on the CPU."""
        was_training = self.training
        if was_training:  # switching modes walks every module: a cost per call that encoding need not pay
            self.eval()
        device = self.device
        step = batch_size or forward_batch(device)
        prepare = self.transform.normalize if images.dtype == torch.uint8 else (lambda x: x)
        with autocast(device):
            out = [self(prepare(images[s:s + step].to(device))).to("cpu") for s in range(0, len(images), step)]
        if was_training:
            self.train()
        return Encoding.cat(out)

    def encode_images(self, images: Iterable[Image.Image], batch_size: int | None = None) -> Encoding:
        """Encode RGB PIL images (any size; letterboxed here), `batch_size` at a time (None: the device's)."""
        step = batch_size or forward_batch(self.device)
        batch, out = [], []
        for img in images:
            batch.append(self.transform(img))
            if len(batch) == step:
                out.append(self.encode(torch.stack(batch), step))
                batch = []
        if batch:
            out.append(self.encode(torch.stack(batch), step))
        return Encoding.cat(out)

    def fingerprint(self) -> str:
        """Short hash of config and weights: an index records it and refuses other weights."""
        # a model keeps the fingerprint it had before a field existed while that field has its old meaning
        unchanged = {"anchor": 0, "anchor_pool": "whole"}
        shape = {k: v for k, v in self.config.to_dict().items()
                 if k not in FITTED_LATER and not (k in unchanged and v == unchanged[k])}
        h = hashlib.sha256(repr(sorted(shape.items())).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]
