"""The training objective: every loss term of one P x K batch, weighed by the run's flags (training.options)."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from mga.fga import diversity_loss
from mga.model import MGAModel

from .augment import TrainSample
from .kinds import KindTerm
from .losses import ProxyAnchorLoss, multi_similarity_loss
from .parts import (background_loss, concentration_loss, consistency_loss, figure_boxes, figure_on_grid,
                    layout_loss, mass_on_figure)
from .robust import CleanTeacher


def loss_terms(model: MGAModel, proxy: ProxyAnchorLoss | None, batch: TrainSample, labels: torch.Tensor,
               categories: torch.Tensor, args: argparse.Namespace, kinds: KindTerm | None = None,
               clean_teacher: CleanTeacher | None = None, layout: torch.Tensor | None = None) -> dict:
    """Every loss term of one batch; `categories` (B,) groups photos for the consistency and category terms and
    picks their slots' landmarks from `layout` (categories, K, 2) for the layout term.
    Phone photos for the kind term share the batch's forward pass (and its batch-norm statistics)."""
    if kinds is None:
        enc = model(batch.image)
    else:
        photos, photo_kinds = kinds.sample(batch.image.device)
        both = model(torch.cat([batch.image, photos.to(batch.image.dtype)]))
        enc, phone = both[: len(batch.image)], both[len(batch.image):]
    glob = enc.global_ @ enc.global_.T
    terms = {"global": multi_similarity_loss(glob, labels)}
    if proxy is not None:
        terms["proxy"] = proxy(enc.embedding, labels)
    coarse = enc.embedding @ enc.embedding.T
    if args.w_coarse:
        terms["coarse"] = multi_similarity_loss(coarse, labels)
    if args.w_category:  # a jacket further from trousers than from other jackets: kinds that phone photos share
        terms["category"] = multi_similarity_loss(coarse if args.category_on == "coarse" else glob, categories)
    if kinds is not None:
        terms["kind"] = kinds.loss(phone.global_, photo_kinds, enc.global_, categories)
    if args.w_ata:
        terms["ata"] = multi_similarity_loss(model.align(enc, enc).scores, labels)
    if args.w_div:
        terms["div"] = diversity_loss(enc.attn.flatten(2))
    figure = figure_on_grid(batch.figure, enc.attn.shape[-2:])
    boxes = figure_boxes(batch.figure.float())
    if args.w_background:
        terms["background"] = background_loss(enc.attn, figure)
    if args.w_skin:  # bare skin is no garment's detail: a part reading the neck beside a neckline names the wrong thing
        terms["skin"] = mass_on_figure(enc.attn, figure_on_grid(batch.skin, enc.attn.shape[-2:])).mean()
    if args.w_concentration:
        terms["concentration"] = concentration_loss(enc.attn, boxes if args.fold else None)
    if args.w_consistency:
        groups = torch.where(batch.close_up, -1, categories)
        terms["consistency"] = consistency_loss(enc.attn, boxes, groups, args.fold)
    if args.w_layout and layout is not None:
        targets = torch.where(batch.close_up[:, None, None], float("nan"), layout[categories])
        terms["layout"] = layout_loss(enc.attn, boxes, targets, figure)
    if args.w_figure and enc.figure is not None:
        terms["figure"] = F.binary_cross_entropy_with_logits(enc.figure, figure)
    if clean_teacher is not None:
        terms["robust"] = clean_teacher.loss(model, enc, batch.clean)
    return terms
