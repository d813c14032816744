"""The training loop of `python -m training.train` (its flags, and what each term does: training.options): set up a
fresh run or resume one, train epoch by epoch with a checkpoint after each, then name the parts, add the anchor,
fit the close-up detector, save the model the Hugging Face way and evaluate it."""
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
from torch.utils.data import DataLoader
from tqdm import tqdm

from mga.config import DEFAULT_RERANK_TOP, PROJECT_ROOT, MGAConfig
from mga.data import category_key, category_of, load_retrieval_data
from mga.devices import autocast, loader_workers, resolve_device
from mga.files import atomic_path
from mga.hub import load_model, save_model_atomically
from mga.model import MGAModel
from mga.transforms import working_side

from . import closeup
from .anchor import with_anchor
from .augment import Backgrounds, ConsumerPhotoAugment, TrainSample
from .batches import ImageDataset, PKSampler
from .distill import PhotoTeacher
from .evaluate import Shop, encode_records, evaluate, recall
from .kinds import KindTerm
from .landmarks import layout_targets
from .losses import ProxyAnchorLoss
from .part_slots import parts_only
from .objective import loss_terms
from .options import parse_args
from .parts import name_model_parts
from .robust import CleanTeacher, keep_batch_statistics


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


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
    layout: torch.Tensor | None = None  # (categories, K, 2) slot landmarks for the layout term
    start_epoch: int = 0
    step: int = 0


def anchor_in_training(args: argparse.Namespace) -> dict:
    """The config fields that put the anchor in place from the first step (`--anchor-from start`)."""
    if args.anchor_from == "start" and args.anchor > 0:
        return {"anchor": args.anchor, "anchor_pool": args.anchor_pool}
    return {}


def build_model(args: argparse.Namespace, data, resume: dict | None) -> MGAModel:
    """A fresh model on the pretrained backbone, the --init weights, or the checkpoint's; its early blocks frozen
    (with --parts-only, everything but the parts)."""
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
    if args.parts_only:
        parts_only(model, args.new_parts, args.new_slots, resumed=resume is not None)
    elif args.freeze_blocks:
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
                                   twin=args.robust_twin if args.w_robust else None, skin=bool(args.w_skin))
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
    if args.new_slots:  # weight decay would shrink the kept slots' queries too
        groups[1]["weight_decay"] = 0.0
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
    try:
        layout = layout_targets(list(category_ids), config.num_parts).to(device) if args.w_layout else None
    except ValueError as e:
        raise SystemExit(f"--w-layout: {e}") from None
    run = Run(model, optimizer, proxy, loader, sampler,
              torch.tensor([category_ids[category[item]] for item in dataset.label_of]).to(device), device, teacher,
              kinds, clean_teacher, layout)
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
               "category": args.w_category, "kind": args.w_kind, "robust": args.w_robust,
               "layout": args.w_layout, "skin": args.w_skin}
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
                            batch.clean.to(run.device, non_blocking=True), batch.skin.to(run.device))
        labels = labels.to(run.device)
        with autocast(run.device):
            terms = loss_terms(run.model, run.proxy, batch, labels, run.item_category[labels], args, run.kinds,
                               run.clean_teacher, run.layout)
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
        q = encode_records(model, data.root, data.query, desc="queries")
        with Shop.indexed(model, data.root, data.gallery) as shop:
            for name, top in (("coarse", 0), ("ata", DEFAULT_RERANK_TOP)):  # the coarse stage alone, then the app's
                summary[name] = {k: v for k, v in recall(shop, data, q, top).items() if k.startswith("R@")}
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
