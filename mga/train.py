"""Train MGA with P x K batches: multi-similarity on the global, coarse and ATA similarities, and part terms that
keep parts apart (diversity), on the garment (background, figure head), compact (concentration) and on the same
region of every garment of a kind (consistency); optionally, distillation that keeps the pretrained backbone's
similarities among real photos (--w-distill, mga.distill), real phone photos near the shop's photos of their
kind of garment (--w-kind, mga.kinds), and, fine-tuning trained weights (--init), spoilt photos read as their clean
twins are by the starting model (--w-robust, mga.robust).

    python -m mga.train --data ../shared/data/luma-inshop --out runs/default

Each epoch writes out/checkpoint.pt atomically; --resume continues from it. At the end the parts are named, the
frozen pretrained backbone gets its share of every similarity (--anchor, mga.anchor; --anchor-from start puts it
in place from the first step instead), and the model is saved the Hugging Face way in out/model/ and, when the
data has a query/gallery split, evaluated (out/eval.json).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .anchor import with_anchor
from . import closeup
from .config import ANCHOR_POOLS, PROJECT_ROOT, TRAIN_BACKGROUNDS, MGAConfig
from .data import ImageDataset, PKSampler, category_key, category_of, load_retrieval_data
from .devices import autocast, loader_workers, resolve_device
from .distill import PhotoTeacher
from .evaluate import DEFAULT_RERANK_TOP, encode_split, evaluate, recall
from .fga import diversity_loss
from .files import atomic_path
from .hub import load_model, save_model_atomically
from .kinds import KindTerm
from .losses import ProxyAnchorLoss, multi_similarity_loss
from .model import MGAModel
from .parts import (background_loss, concentration_loss, consistency_loss, figure_boxes, figure_on_grid,
                    name_model_parts)
from .robust import CleanTeacher, keep_batch_statistics
from .transforms import TWINS, Backgrounds, ConsumerPhotoAugment, TrainSample, working_side


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mga.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root with Eval/list_eval_partition.txt")
    p.add_argument("--format", choices=["inshop", "consumer2shop"], help="default: read off the partition file")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, metrics.jsonl, model/)")
    p.add_argument("--init", help="start from these trained weights (a checkpoint folder or Hub id), not from the "
                   "pretrained backbone; the architecture options below are then the checkpoint's")
    p.add_argument("--backbone", default=MGAConfig.backbone)
    p.add_argument("--image-size", type=int, default=MGAConfig.image_size, help="input side")
    p.add_argument("--embed-dim", type=int, default=MGAConfig.embed_dim)
    p.add_argument("--num-parts", type=int, default=MGAConfig.num_parts)
    p.add_argument("--fga-layers", type=int, default=MGAConfig.fga_layers)
    p.add_argument("--alpha", type=float, default=MGAConfig.alpha, help="weight of the global term")
    p.add_argument("--tau", type=float, default=MGAConfig.tau, help="ATA assignment temperature")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--p", type=int, default=8, help="items per batch")
    p.add_argument("--k", type=int, default=4, help="images per item in a batch")
    p.add_argument("--freeze-blocks", type=int, default=3, help="freeze the backbone's stem and first N blocks")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the MGA heads")
    p.add_argument("--backbone-lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--w-global", type=float, default=1.0, help="loss weight: MS on the global token")
    p.add_argument("--w-coarse", type=float, default=1.0, help="loss weight: MS on the coarse embedding")
    p.add_argument("--w-ata", type=float, default=1.0, help="loss weight: MS on the ATA similarity")
    p.add_argument("--w-category", type=float, default=0.0,
                   help="loss weight: MS with garment categories as labels, on --category-on")
    p.add_argument("--category-on", choices=("coarse", "global"), default="coarse",
                   help="what the category term shapes: the coarse embedding, or the global token alone (the "
                        "parts and ATA left to the products)")
    p.add_argument("--w-kind", type=float, default=0.0,
                   help="loss weight: real phone photos near the shop photos of their kind of garment (mga.kinds)")
    p.add_argument("--kind-photos", default=str(TRAIN_BACKGROUNDS) if TRAIN_BACKGROUNDS.is_dir() else "",
                   help="phone photos in one folder per kind for --w-kind; default: the distractors' validation split")
    p.add_argument("--kind-batch", type=int, default=8, help="phone photos per step for --w-kind")
    p.add_argument("--w-div", type=float, default=0.1, help="loss weight: part attention diversity")
    p.add_argument("--w-background", type=float, default=0.25, help="loss weight: part attention off the figure")
    p.add_argument("--w-concentration", type=float, default=2.0, help="loss weight: spread of each part map")
    p.add_argument("--w-consistency", type=float, default=4.0,
                   help="loss weight: variance of part centroids (figure-box coordinates) within a category")
    p.add_argument("--w-figure", type=float, default=1.0, help="loss weight: the figure head's mask (BCE)")
    p.add_argument("--figure-head", action=argparse.BooleanOptionalAction, default=True,
                   help="a figure/background head that weights the global pooling and biases part attention")
    p.add_argument("--w-proxy", type=float, default=0.0, help="loss weight: Proxy-Anchor on the coarse embedding")
    p.add_argument("--proxy-lr", type=float, default=1e-2, help="learning rate of the Proxy-Anchor proxies")
    p.add_argument("--w-distill", type=float, default=0.0,
                   help="loss weight: keep the pretrained backbone's similarities among real photos (mga.distill)")
    p.add_argument("--distill-photos", default=str(TRAIN_BACKGROUNDS) if TRAIN_BACKGROUNDS.is_dir() else "",
                   help="folder of real photos for --w-distill; default: the distractors' validation split")
    p.add_argument("--distill-batch", type=int, default=16, help="real photos per step for --w-distill")
    p.add_argument("--w-robust", type=float, default=0.0,
                   help="loss weight: the --init model, frozen, reads each photo's clean twin; the trained copy must "
                        "read the spoilt photo the same (mga.robust; needs --init)")
    p.add_argument("--robust-twin", choices=TWINS, default="framed",
                   help="the clean twin the --init model reads: the spoilt photo's crop and tilt (framed) or the "
                        "whole garment (whole)")
    p.add_argument("--anchor", type=float, default=0.5,
                   help="after training, the pretrained backbone's share of every similarity (mga.anchor; 0: none)")
    p.add_argument("--anchor-pool", choices=ANCHOR_POOLS, default="whole",
                   help="what the anchor's GeM pools: the whole photo or the figure (mga.anchor --pool)")
    p.add_argument("--anchor-from", choices=("end", "start"), default="end",
                   help="when the anchor joins: after training, or from the first step (the losses then see the "
                        "anchored similarities; measured worse on phone photos, docs/experiments.md)")
    p.add_argument("--augment", type=float, default=0.5, help="strength of consumer-photo augmentation (0 = off)")
    p.add_argument("--detail", type=float, default=0.25, help="probability of a close-up crop of a garment detail")
    p.add_argument("--clutter", type=float, default=0.6, help="probability (x --augment) of a new background")
    p.add_argument("--degrade", type=float, default=0.4,
                   help="probability of a low-resolution, heavily compressed copy of the photo")
    p.add_argument("--shopper", type=float, default=0.0,
                   help="probability of a shopper's photo: clutter, crop, tilt, blur and a low-resolution copy at once")
    p.add_argument("--backgrounds", default=str(TRAIN_BACKGROUNDS) if TRAIN_BACKGROUNDS.is_dir() else "",
                   help="folder of real photos to paste garments onto ('' : flat colours and noise only); "
                        "default: the distractors' validation split, never their test split")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N epochs (0: only at the end)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="decoding processes (default: the device's, config.LOADER_WORKERS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt if it exists")
    args = p.parse_args(argv)
    if not 0 <= args.anchor < 1:
        p.error(f"--anchor {args.anchor:g}: the share must lie in [0, 1)")
    if args.w_robust and not args.init:
        p.error("--w-robust distils the --init model: pass --init")
    if not args.resume and (Path(args.out) / "checkpoint.pt").exists():
        # A fresh run would overwrite that checkpoint epoch by epoch: hours of training lost to a missing flag.
        p.error(f"{Path(args.out) / 'checkpoint.pt'} exists: pass --resume to continue that run, or choose "
                "another --out (delete the folder to start it over)")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def loss_terms(model: MGAModel, proxy: ProxyAnchorLoss | None, batch: TrainSample, labels: torch.Tensor,
               categories: torch.Tensor, args: argparse.Namespace, kinds: KindTerm | None = None,
               clean_teacher: CleanTeacher | None = None) -> dict:
    """Every loss term of one batch; `categories` (B,) groups photos for the consistency and category terms.
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
    if args.w_background:
        terms["background"] = background_loss(enc.attn, figure)
    if args.w_concentration:
        terms["concentration"] = concentration_loss(enc.attn)
    if args.w_consistency:
        groups = torch.where(batch.close_up, -1, categories)
        terms["consistency"] = consistency_loss(enc.attn, figure_boxes(batch.figure.float()), groups)
    if args.w_figure and enc.figure is not None:
        terms["figure"] = F.binary_cross_entropy_with_logits(enc.figure, figure)
    if clean_teacher is not None:
        terms["robust"] = clean_teacher.loss(model, enc, batch.clean)
    return terms


def portable(value):
    """An absolute path inside the project's parent folder as a path relative to the project: what config.json
    records must not name a machine's folders."""
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(PROJECT_ROOT.parent):
        return os.path.relpath(value, PROJECT_ROOT)
    return value


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus its (data loader) children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


@dataclass
class Run:
    """What one training run works with, set up by `setup` (fresh, or from out/checkpoint.pt)."""

    model: MGAModel
    optimizer: torch.optim.Optimizer
    proxy: ProxyAnchorLoss | None
    loader: DataLoader
    sampler: PKSampler
    item_category: torch.Tensor  # (items,) category id of each label, for the consistency and category terms
    device: torch.device
    teacher: PhotoTeacher | None = None
    kinds: KindTerm | None = None
    clean_teacher: CleanTeacher | None = None
    start_epoch: int = 0
    step: int = 0


def anchor_in_training(args: argparse.Namespace) -> dict:
    """The config fields that put the anchor in place from the first step (`--anchor-from start`)."""
    if args.anchor_from == "start" and args.anchor > 0:
        return {"anchor": args.anchor, "anchor_pool": args.anchor_pool}
    return {}


def build_model(args: argparse.Namespace, data, resume: dict | None) -> MGAModel:
    """A fresh model on the pretrained backbone, the --init weights, or the checkpoint's; its early blocks frozen."""
    if resume:
        model = MGAModel(MGAConfig.from_dict(resume["config"]))
        model.load_state_dict(resume["model"])
    elif args.init:
        model = load_model(args.init)
    else:
        model = MGAModel.from_backbone(MGAConfig(
            backbone=args.backbone, image_size=args.image_size, embed_dim=args.embed_dim,
            num_parts=args.num_parts, fga_layers=args.fga_layers, alpha=args.alpha, tau=args.tau,
            figure_head=args.figure_head, **anchor_in_training(args)))
    model.config.extra = {"train_args": {k: portable(v) for k, v in vars(args).items() if k not in ("resume",)},
                          "train_data": str(Path(args.data).name), "train_images": len(data.train)}
    if args.freeze_blocks:
        model.backbone.freeze_early(args.freeze_blocks)
    return model


def setup(args: argparse.Namespace, data, checkpoint_path: Path) -> Run:
    device = resolve_device(args.device)
    resume = torch.load(checkpoint_path, map_location="cpu", weights_only=True) \
        if args.resume and checkpoint_path.exists() else None
    model = build_model(args, data, resume).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    config, side = model.config, working_side(model.config.image_size)
    backgrounds = Backgrounds(sorted(Path(args.backgrounds).rglob("*.jpg")), side) if args.backgrounds else None
    augment = ConsumerPhotoAugment(config.image_size, config.mean, config.std, args.augment, args.detail,
                                   args.clutter, backgrounds, args.degrade, args.shopper,
                                   twin=args.robust_twin if args.w_robust else None)
    dataset = ImageDataset(data.root, data.train, augment, max_side=side, cache=True)
    category = {r.item_id: category_key(category_of(r.path)) for r in data.train}
    category_ids = {c: i for i, c in enumerate(sorted(set(category.values())))}
    sampler = PKSampler(dataset.labels, args.p, args.k, args.seed)
    workers = loader_workers(device) if args.workers is None else args.workers
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": args.backbone_lr},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")],
               "lr": args.lr}]
    proxy = None
    if args.w_proxy:
        proxy = ProxyAnchorLoss(len(dataset.label_of), config.embedding_dim)
        if resume:
            proxy.load_state_dict(resume["proxy"])
        proxy.to(device)
        groups.append({"params": list(proxy.parameters()), "lr": args.proxy_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    teacher = None
    if args.w_distill:
        photos = sorted(Path(args.distill_photos).rglob("*.jpg")) if args.distill_photos else []
        if len(photos) < 3:
            raise SystemExit(f"--distill-photos {args.distill_photos!r}: --w-distill needs at least 3 .jpg photos, "
                             f"found {len(photos)}")
        teacher = PhotoTeacher(photos, model, args.distill_batch, device)
    kinds = None
    if args.w_kind:
        try:
            kinds = KindTerm(args.kind_photos, model.transform, list(category_ids), args.kind_batch)
        except ValueError as e:
            raise SystemExit(f"--kind-photos {args.kind_photos!r}: {e}") from None
    clean_teacher = CleanTeacher(load_model(args.init).to(device), args.robust_twin) if args.w_robust else None
    run = Run(model, optimizer, proxy, loader, sampler,
              torch.tensor([category_ids[category[item]] for item in dataset.label_of]).to(device), device, teacher,
              kinds, clean_teacher)
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        run.start_epoch, run.step = resume["epoch"], resume["step"]
        print(f"resumed from {checkpoint_path} at epoch {run.start_epoch}")
    return run


def train_epoch(run: Run, args: argparse.Namespace, epoch: int, base_lrs: list[float]) -> dict:
    """One epoch over the P x K batches; returns the mean of each loss term."""
    weights = {"global": args.w_global, "coarse": args.w_coarse, "ata": args.w_ata, "div": args.w_div,
               "proxy": args.w_proxy, "background": args.w_background, "concentration": args.w_concentration,
               "consistency": args.w_consistency, "figure": args.w_figure, "distill": args.w_distill,
               "category": args.w_category, "kind": args.w_kind, "robust": args.w_robust}
    total, warmup = args.epochs * len(run.sampler), int(args.warmup_epochs * len(run.sampler))
    run.model.train()
    if run.clean_teacher is not None:
        keep_batch_statistics(run.model)
    sums: dict[str, float] = {}
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False, disable=None)
    for batch, labels in bar:
        for group, base in zip(run.optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(run.step, total, warmup)
        images = batch.image.to(run.device, non_blocking=True)
        if run.device.type == "cuda":
            images = images.to(memory_format=torch.channels_last)
        batch = TrainSample(images, batch.figure.to(run.device), batch.close_up.to(run.device),
                            batch.clean.to(run.device, non_blocking=True))
        labels = labels.to(run.device)
        with autocast(run.device):
            terms = loss_terms(run.model, run.proxy, batch, labels, run.item_category[labels], args, run.kinds,
                               run.clean_teacher)
            if run.teacher is not None:
                terms["distill"] = run.teacher.loss(run.model)
        loss = sum(weights[k] * v for k, v in terms.items())
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.step += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return {f"loss_{k}": round(v / len(run.sampler), 4) for k, v in sums.items()}


def train(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    data = load_retrieval_data(args.data, args.format)
    checkpoint_path = out / "checkpoint.pt"
    run = setup(args, data, checkpoint_path)
    base_lrs = [g["lr"] for g in run.optimizer.param_groups]
    t0 = time.perf_counter()
    for epoch in range(run.start_epoch, args.epochs):
        seed_everything(args.seed * 1000 + epoch)
        run.sampler.set_epoch(epoch)
        epoch_start = time.perf_counter()
        losses = train_epoch(run, args, epoch, base_lrs)
        record = {"epoch": epoch + 1, "step": run.step, "seconds": round(time.perf_counter() - epoch_start, 1),
                  **losses}
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs and data.query:
            record.update({k: v for k, v in evaluate(run.model, data, DEFAULT_RERANK_TOP).items()
                           if k.startswith("R@")})
        print(json.dumps(record))
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        with atomic_path(checkpoint_path) as tmp:
            torch.save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                        "epoch": epoch + 1, "step": run.step, "config": run.model.config.to_dict(),
                        **({"proxy": run.proxy.state_dict()} if run.proxy else {})}, tmp)
    train_seconds = round(time.perf_counter() - t0, 1)
    summary = {"train_seconds": train_seconds,
               **finish(run.model, data, out, run.device, args.anchor, args.anchor_pool, args.backgrounds or None)}
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


def finish(model: MGAModel, data, out: Path, device: torch.device, anchor: float = 0.0,
           anchor_pool: str = "whole", phones: str | None = None) -> dict:
    """Name the parts, add the anchor, fit the close-up detector (on the training split and the `phones`), save
    the model the Hugging Face way (out/model) and evaluate it where the data can."""
    model.eval()
    model.to("cpu")
    name_model_parts(model, data)
    if anchor > 0 and model.anchor is None:  # with --anchor-from start it is in place already
        model = with_anchor(model, anchor, anchor_pool)
    try:
        model.config.closeup = closeup.fit(model, *closeup.training_photos(data, phones))
    except ValueError as e:  # a data set without close-ups: every query keeps every view
        print(f"no close-up detector: {e}")
    save_model_atomically(model, out / "model")
    model.to(device)
    summary = {"peak_memory_mb": round(peak_memory_mb()), "device": str(device), "fingerprint": model.fingerprint()}
    if data.query and data.gallery:
        q, g, owner = encode_split(model, data)
        rankings = (("coarse", 0, "coarse"), ("ata", DEFAULT_RERANK_TOP, "coarse"), ("global", 0, "global"))
        for name, top, desc in rankings:
            res = recall(model, data, q, g, owner, top, desc)
            summary[name] = {k: v for k, v in res.items() if k.startswith("R@")}
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
