"""Keeping what the pretrained backbone knows about real photos: similarity-preserving distillation.

Fine-tuning on a few hundred studio photos of 75 products teaches the model to tell those products apart, and
pushes apart photos of the same kind of garment (its hardest negatives); on real shoppers' photos it then puts
the right kind of garment at #1 less often than the untrained backbone (bench.phone_photos). Each training step
therefore also encodes a few real photos (distractors/validation, the training side) and asks the coarse
embedding to keep the frozen pretrained backbone's similarities among them: each photo's row of similarities
should correlate with the teacher's (Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019,
with a correlation instead of a normalised Gram matrix, so that the two similarity scales need not agree).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mga.backbones import TokenBackbone
from mga.model import MGAModel
from mga.transforms import EvalTransform


def similarity_correlation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - the mean Pearson correlation between each row of the two (B, B) similarity matrices, the diagonal
    left out: 0 when every photo ranks the others as the teacher does (up to scale), 2 when reversed."""
    off = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    s, t = student[off].view(len(student), -1), teacher[off].view(len(teacher), -1)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    return 1 - F.cosine_similarity(s, t, dim=1, eps=1e-8).mean()


class PretrainedGeM:
    """The pretrained backbone, frozen, as a retrieval descriptor: the L2-normalised GeM of its last map (a ViT's
    CLS token). It is the teacher of the distillation term and the baseline the benchmarks measure every model
    against; `backbone` names another of mga.backbones.BACKBONES, at the model's input side, to compare with."""

    def __init__(self, like: MGAModel, device: torch.device | str = "cpu", backbone: str | None = None):
        self.backbone = TokenBackbone(backbone or like.config.backbone, like.config.image_size, like.config.gem_p)
        self.backbone.load_pretrained()
        self.backbone.eval().to(device)
        spec = self.backbone.spec
        self.transform = EvalTransform(like.config.image_size, spec.mean, spec.std)
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """(N, C) descriptors, on the device, of uint8 pixels (N, 3, S, S) from `transform.pixels`."""
        feats = [self.backbone(self.transform.normalize(pixels[s:s + batch].to(self.device)))[0].float()
                 for s in range(0, len(pixels), batch)]
        return F.normalize(torch.cat(feats), dim=-1)

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, C) descriptors of PIL images (letterboxed as the model's own input)."""
        return self.encode_pixels(torch.stack([self.transform.pixels(im) for im in images])).cpu()

    def ranking(self, queries: Sequence[Image.Image], gallery: torch.Tensor, top: int = 10) -> np.ndarray:
        """(Q, top) gallery indices, best first, for a gallery of descriptors from `encode`."""
        return (self.encode(queries) @ gallery.T).argsort(dim=1, descending=True)[:, :top].numpy()


class PhotoTeacher:
    """Real photos and the teacher's descriptors of them, computed once: the photos are shown untransformed,
    so the teacher's side never changes."""

    def __init__(self, paths: Sequence[Path], model: MGAModel, batch: int, device: torch.device):
        if len(paths) < 3:
            raise ValueError(f"distillation needs at least 3 photos, found {len(paths)}")
        self.batch, self.device, self.transform = min(batch, len(paths)), device, model.transform
        self.pixels = self.transform.load_pixels(paths)
        self.features = PretrainedGeM(model, device).encode_pixels(self.pixels)

    def loss(self, model: MGAModel) -> torch.Tensor:
        """The distillation term on a random batch of the photos (the global RNG, seeded per epoch)."""
        pick = torch.randperm(len(self.pixels))[: self.batch]
        enc = model(self.transform.normalize(self.pixels[pick].to(self.device)))
        teacher = self.features[pick.to(self.device)]
        return similarity_correlation_loss(enc.embedding @ enc.embedding.T, teacher @ teacher.T)
