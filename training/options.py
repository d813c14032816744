"""Train MGA with P x K batches: multi-similarity on the global, coarse and ATA similarities, and part terms that
keep parts apart (diversity), on the garment (background, figure head), compact (concentration) and on the same
region of every garment of a kind (consistency); optionally, distillation that keeps the pretrained backbone's
similarities among real photos (--w-distill, training.distill), real phone photos near the shop's photos of their
kind of garment (--w-kind, training.kinds), and, fine-tuning trained weights (--init), spoilt photos read as their clean
twins are by the starting model (--w-robust, training.robust).

    python -m training.train --data ../shared/data/luma-inshop --out runs/default

Each epoch writes out/checkpoint.pt atomically; --resume continues from it. At the end the parts are named, the
frozen pretrained backbone gets its share of every similarity (--anchor, training.anchor; --anchor-from start puts it
in place from the first step instead), and the model is saved the Hugging Face way in out/model/ and, when the
data has a query/gallery split, evaluated (out/eval.json).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from mga.config import ANCHOR_POOLS, TRAIN_BACKGROUNDS, MGAConfig

from .augment import TWINS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
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
    p.add_argument("--parts-only", action="store_true",
                   help="train the part aggregator alone (FGA and the parts' weights); the backbone, the global token "
                        "and the figure head stay as --init has them: moving the parts without moving the rest")
    p.add_argument("--new-parts", action="store_true",
                   help="with --parts-only: a fresh part aggregator (FGA, the parts' weights) on the --init model, "
                        "placed anew by the part terms and the layout prior; trained parts are too concentrated for "
                        "the prior to pull one across the garment")
    p.add_argument("--new-slots", type=int, nargs="+", default=[],
                   help="with --parts-only: these part slots start anew and train alone (their queries; and the "
                        "parts' weights), the rest of the aggregator and the other parts as --init has them: "
                        "parts at new details beside the ones a ranking already relies on")
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
                   help="loss weight: real phone photos near the shop photos of their kind of garment (training.kinds)")
    p.add_argument("--kind-photos", default=str(TRAIN_BACKGROUNDS) if TRAIN_BACKGROUNDS.is_dir() else "",
                   help="phone photos in one folder per kind for --w-kind; default: the distractors' validation split")
    p.add_argument("--kind-batch", type=int, default=8, help="phone photos per step for --w-kind")
    p.add_argument("--w-div", type=float, default=0.1, help="loss weight: part attention diversity")
    p.add_argument("--w-background", type=float, default=0.25, help="loss weight: part attention off the figure")
    p.add_argument("--w-skin", type=float, default=0.0,
                   help="loss weight: part attention on the wearer's skin (read off the studio photo's colours)")
    p.add_argument("--w-concentration", type=float, default=2.0, help="loss weight: spread of each part map")
    p.add_argument("--w-consistency", type=float, default=4.0,
                   help="loss weight: variance of part centroids (figure-box coordinates) within a category")
    p.add_argument("--fold", action=argparse.BooleanOptionalAction, default=True,
                   help="measure concentration and consistency on part maps folded about the figure's vertical axis, "
                        "so that a mirror pair (both cuffs, both knees) may be one part")
    p.add_argument("--w-layout", type=float, default=0.0,
                   help="loss weight: each part's attention near its slot's landmark (training.landmarks.LAYOUT: "
                        "shoulder, sleeve / cuff, the legs' knee and hem; needs 6 parts)")
    p.add_argument("--w-figure", type=float, default=1.0, help="loss weight: the figure head's mask (BCE)")
    p.add_argument("--figure-head", action=argparse.BooleanOptionalAction, default=True,
                   help="a figure/background head that weights the global pooling and biases part attention")
    p.add_argument("--w-proxy", type=float, default=0.0, help="loss weight: Proxy-Anchor on the coarse embedding")
    p.add_argument("--proxy-lr", type=float, default=1e-2, help="learning rate of the Proxy-Anchor proxies")
    p.add_argument("--w-distill", type=float, default=0.0,
                   help="loss weight: keep the pretrained backbone's similarities among real photos (training.distill)")
    p.add_argument("--distill-photos", default=str(TRAIN_BACKGROUNDS) if TRAIN_BACKGROUNDS.is_dir() else "",
                   help="folder of real photos for --w-distill; default: the distractors' validation split")
    p.add_argument("--distill-batch", type=int, default=16, help="real photos per step for --w-distill")
    p.add_argument("--w-robust", type=float, default=0.0,
                   help="loss weight: the --init model, frozen, reads each photo's clean twin; the trained copy must "
                        "read the spoilt photo the same (training.robust; needs --init)")
    p.add_argument("--robust-twin", choices=TWINS, default="framed",
                   help="the clean twin the --init model reads: the spoilt photo's crop and tilt (framed) or the "
                        "whole garment (whole)")
    p.add_argument("--anchor", type=float, default=0.5,
                   help="after training, the pretrained backbone's share of every similarity (training.anchor; 0: "
                        "none)")
    p.add_argument("--anchor-pool", choices=ANCHOR_POOLS, default="whole",
                   help="what the anchor's GeM pools: the whole photo or the figure (training.anchor --pool)")
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
    if args.parts_only and not args.init:
        p.error("--parts-only trains the parts of trained weights: pass --init")
    if args.new_parts and not args.parts_only:
        p.error("--new-parts replaces the parts of trained weights and trains them alone: pass --parts-only")
    if args.new_slots and (not args.parts_only or args.new_parts):
        p.error("--new-slots replaces some parts of trained weights and keeps the others: pass --parts-only, "
                "not --new-parts")
    if not args.resume and (Path(args.out) / "checkpoint.pt").exists():
        # A fresh run would overwrite that checkpoint epoch by epoch: hours of training lost to a missing flag.
        p.error(f"{Path(args.out) / 'checkpoint.pt'} exists: pass --resume to continue that run, or choose "
                "another --out (delete the folder to start it over)")
    return args
