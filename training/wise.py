"""Weight-space ensembling with the pretrained backbone (WiSE-FT, Wortsman et al., CVPR 2022).

    python -m training.wise --weights runs/default/model --ratio 0.7 --out runs/default/wise70

The fine-tuned backbone's weights are moved back towards the pretrained ones: theta = r * fine-tuned +
(1 - r) * pretrained. Fine-tuning on a few hundred studio photos sharpens the model on studio photos and costs
some of what the pretrained backbone knew about garments in the wild; interpolating keeps part of both. The MGA
heads stay as trained. The result is a checkpoint like any other (its config records the ratio).
"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch

from mga.backbones import cached_pretrained_state
from mga.hub import rewrite_checkpoint
from mga.model import MGAModel


@torch.no_grad()
def interpolate_backbone(model: MGAModel, ratio: float) -> MGAModel:
    """In place: backbone = ratio * its weights + (1 - ratio) * the pretrained weights (float tensors only;
    BatchNorm's step counters are kept)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], not {ratio}")
    pretrained = cached_pretrained_state(model.backbone.spec, model.backbone.model)
    for name, tensor in model.backbone.model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(ratio * tensor + (1 - ratio) * pretrained[name].to(tensor))
    model.config.extra = {**model.config.extra, "wise_ratio": ratio}
    return model


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.wise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="fine-tuned checkpoint folder or Hub id")
    p.add_argument("--ratio", type=float, required=True, help="share of the fine-tuned weights, 0..1")
    p.add_argument("--out", required=True, help="folder for the interpolated checkpoint")
    args = p.parse_args(argv)
    rewrite_checkpoint(p.prog, args.weights, args.out, lambda model: interpolate_backbone(model, args.ratio))
    print(f"wrote {args.out} (backbone {args.ratio:g} fine-tuned + {1 - args.ratio:g} pretrained)")


if __name__ == "__main__":
    main()
