"""A shopper's photo should read like the studio photo it spoils: clean-teacher self-distillation.

A trained model, frozen, is shown each training photo clean (studio white, the same crop, flip and tilt); a copy
of it, fine-tuned, is shown the same framing spoilt (clutter behind the garment, colour, blur, JPEG, a
low-resolution copy) and asked to give what the frozen model gave: the coarse embedding, every part token and
every part map. Metric learning on spoilt photos pulls photos of one product together wherever the batch puts
them; here the target is fixed, so the fine-tuned model can only learn to see through the spoiling, and the
parts keep their places and names (in the spirit of Noisy Student, Xie et al., CVPR 2020, and of feature
distillation for robustness). The copy must also still read the clean twin as the frozen model does, and its
BatchNorm statistics stay the frozen model's: spoilt batches would otherwise become the statistics that every
studio photo of the gallery is encoded with. A "whole" twin (the garment uncropped and untilted, as the shop shows
it) asks more: a partial view should read as the whole garment, as DINO's local crops answer for the global view
(Caron et al., ICCV 2021); its part maps cannot line up with the spoilt photo's, so they are not compared.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mga.model import Encoding, MGAModel


def robust_loss(student: Encoding, teacher: Encoding, maps: bool = True) -> torch.Tensor:
    """1 - cosine of the coarse embeddings, plus 1 - the mean cosine of the part tokens, plus (with `maps`, for
    photos framed alike) half the L1 distance of the part maps (each sums to 1, so 0: the same map, 1: disjoint):
    0 when the spoilt photo is read as the clean one."""
    embedding = 1 - F.cosine_similarity(student.embedding.float(), teacher.embedding.float(), dim=-1).mean()
    parts = 1 - F.cosine_similarity(student.parts.float(), teacher.parts.float(), dim=-1).mean()
    if not maps:
        return embedding + parts
    return embedding + parts + 0.5 * (student.attn.float() - teacher.attn.float()).abs().flatten(2).sum(-1).mean()


class CleanTeacher:
    """The model a fine-tuning starts from, frozen: what the fine-tuned copy should say of every spoilt photo."""

    def __init__(self, model: MGAModel, twin: str = "framed"):
        self.model = model.eval().requires_grad_(False)
        self.twin = twin  # as training.augment.ConsumerPhotoAugment drew the clean twins

    def loss(self, student: MGAModel, spoilt: Encoding, clean: torch.Tensor) -> torch.Tensor:
        """`spoilt`: the fine-tuned `student`'s encoding of the spoilt photos; `clean`: their clean twins, which the
        student reads as well."""
        with torch.no_grad():
            target = self.model(clean)
        return robust_loss(spoilt, target, maps=self.twin == "framed") + robust_loss(student(clean), target)


def keep_batch_statistics(model: nn.Module) -> None:
    """BatchNorm layers to evaluation mode (after `model.train()`): they normalise with, and keep, the statistics
    they were trained with."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
