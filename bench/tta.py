"""Test-time options that need no training: a mirror-averaged encoding and a larger input side at test time.

    python -m bench.tta --data ../shared/data/luma-inshop [--weights DIR|HUB_ID ...] [--sides 320]

For each set of weights, clean R@1 / R@10 in training.evaluate's protocol (coarse + ATA over the gallery's zoom
views): as trained, with every query and gallery image encoded as the mean of itself and its mirror image
(twice the encoding time), and at each larger input side (train-time random crops make garments look larger than
a test photo shows them, so a CNN can gain from a larger test side: FixRes, Touvron et al., 2019).
"""
from __future__ import annotations

import argparse
import json
import types
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from mga.data import load_retrieval_data
from training.evaluate import evaluate
from mga.hub import describe_weights, load_model
from mga.model import Encoding, MGAModel, coarse_embedding
from mga.transforms import EvalTransform


def mirror_averaged(model: MGAModel) -> MGAModel:
    """`model`, with every encoding the mean of an image's and its mirror image's (part maps mirrored back)."""
    encode = model.encode

    def encode_both(self: MGAModel, images: torch.Tensor, batch_size: int | None = None) -> Encoding:
        a, b = encode(images, batch_size), encode(images.flip(-1), batch_size)
        g, parts = F.normalize(a.global_ + b.global_, dim=-1), F.normalize(a.parts + b.parts, dim=-1)
        return Encoding(g, parts, (a.attn + b.attn.flip(-1)) / 2, coarse_embedding(g, parts, self.config.global_weight))

    model.encode = types.MethodType(encode_both, model)
    return model


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.tta", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", nargs="*", default=[None],
                   help="one or more checkpoint folders / Hub ids (default: the embedded default)")
    p.add_argument("--sides", type=int, nargs="*", default=[320], help="larger input sides to test at")
    p.add_argument("--json")
    args = p.parse_args(argv)
    data = load_retrieval_data(args.data)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for weights in args.weights:
        label, rows = describe_weights(weights), {}
        model = load_model(weights)
        rows[f"as trained ({model.config.image_size} px)"] = evaluate(model, data)
        for side in args.sides:
            model.transform = EvalTransform(side, model.config.mean, model.config.std)
            rows[f"test side {side} px"] = evaluate(model, data)
        rows["mirror-averaged"] = evaluate(mirror_averaged(load_model(weights)), data)
        results[label] = {name: {k: r[k] for k in ("R@1", "R@10", "seconds")} for name, r in rows.items()}
        print(label)
        for name, r in results[label].items():
            print(f"  {name:<24} R@1 {r['R@1']:.3f}  R@10 {r['R@10']:.3f}  {r['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
