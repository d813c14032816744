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

import torch
import torch.nn.functional as F

from .backbones import TokenBackbone
from .imageio import load_image
from .model import MGAModel
from .transforms import EvalTransform, working_side


def similarity_correlation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - the mean Pearson correlation between each row of the two (B, B) similarity matrices, the diagonal
    left out: 0 when every photo ranks the others as the teacher does (up to scale), 2 when reversed."""
    off = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    s, t = student[off].view(len(student), -1), teacher[off].view(len(teacher), -1)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    return 1 - F.cosine_similarity(s, t, dim=1, eps=1e-8).mean()


class PhotoTeacher:
    """Real photos and the frozen pretrained backbone's GeM descriptors of them, computed once: the photos are
    shown untransformed, so the teacher's side never changes."""

    def __init__(self, paths: Sequence[Path], transform: EvalTransform, backbone: str, gem_p: float,
                 batch: int, device: torch.device):
        if len(paths) < 3:
            raise ValueError(f"distillation needs at least 3 photos, found {len(paths)}")
        self.batch, self.device, self.transform = min(batch, len(paths)), device, transform
        side = working_side(transform.size)
        self.pixels = torch.stack([transform.pixels(load_image(p, max_side=side)) for p in paths])  # uint8
        teacher = TokenBackbone(backbone, transform.size, gem_p)
        teacher.load_pretrained()
        teacher.eval().to(device)
        with torch.inference_mode():
            feats = [teacher(transform.normalize(self.pixels[s:s + 16].to(device)))[0].float()
                     for s in range(0, len(self.pixels), 16)]
        self.features = F.normalize(torch.cat(feats), dim=-1)

    def loss(self, model: MGAModel) -> torch.Tensor:
        """The distillation term on a random batch of the photos (the global RNG, seeded per epoch)."""
        pick = torch.randperm(len(self.pixels))[: self.batch]
        enc = model(self.transform.normalize(self.pixels[pick].to(self.device)))
        teacher = self.features[pick.to(self.device)]
        return similarity_correlation_loss(enc.embedding @ enc.embedding.T, teacher @ teacher.T)
