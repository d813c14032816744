"""An anchor in the pretrained backbone: a share of every similarity for its frozen GeM descriptor.

    python -m training.anchor --weights runs/default/model --share 0.5 --out runs/default/anchor50 [--pool figure]

Fine-tuning on a few hundred studio photos of 75 products makes the model better at telling those products apart
and worse than the untrained backbone at real shoppers' photos (bench.phone_photos): it forgets what the
backbone knew about garments in the wild. Moving the weights back (WiSE-FT, training.wise) costs the heads trained on
the fine-tuned features. An anchor keeps both models whole instead: the frozen pretrained backbone runs beside
the fine-tuned one, and its GeM descriptor rides in the global token, so that every similarity (coarse search,
ATA re-ranking) is (1 - share) x the MGA similarity + share x the pretrained descriptor's cosine. The heads and
part maps are untouched; the result is a checkpoint like any other, its encodings wider by the backbone's width.
With --pool figure the descriptor pools the garment alone (the figure head's probability), not the room behind it.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Sequence

from mga.config import ANCHOR_POOLS
from mga.hub import rewrite_checkpoint
from mga.model import MGAModel


def with_anchor(model: MGAModel, share: float, pool: str = "whole") -> MGAModel:
    """A copy of `model` whose similarities give `share` to the frozen pretrained backbone's GeM descriptor of the
    `pool` ("whole" photo or "figure"; 0: none; an anchor it already has is replaced)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the anchor's share must lie in [0, 1), not {share}")
    anchored = MGAModel(replace(model.config, anchor=share, anchor_pool=pool))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("anchor.")}
    missing, unexpected = anchored.load_state_dict(own, strict=False)
    if unexpected or any(not k.startswith("anchor.") for k in missing):
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    if anchored.anchor is not None:
        anchored.anchor.load_pretrained()
    return anchored.eval()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.anchor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="trained checkpoint folder or Hub id")
    p.add_argument("--share", type=float, required=True,
                   help="the anchor's share of every similarity, in [0, 1) (0: remove it)")
    p.add_argument("--pool", choices=ANCHOR_POOLS, default="whole",
                   help="what the pretrained GeM pools: the whole photo, or the figure (the figure head's probability)")
    p.add_argument("--out", required=True, help="folder for the anchored checkpoint")
    args = p.parse_args(argv)
    rewrite_checkpoint(p.prog, args.weights, args.out, lambda model: with_anchor(model, args.share, args.pool))
    print(f"wrote {args.out} (share {args.share:g} of every similarity for the pretrained backbone's GeM "
          f"of the {args.pool})")


if __name__ == "__main__":
    main()
