"""Weight-space averaging of fine-tuned checkpoints (a model soup, Wortsman et al., ICML 2022).

    python -m training.soup --weights runs/a/model runs/b/model --out runs/soup [--data ../shared/data/luma-inshop]

Two fine-tunings of one pretrained backbone from one initialisation (e.g. two recipes, one seed) stay in one basin
of the loss, so the mean of their weights is a model that keeps much of what each learnt, at the cost of one
model. Backbone, heads and the anchor's frozen copy are all averaged; checkpoints must have the same shape
(config and tensors). Part names are fitted to the new weights when --data is given.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Sequence

import torch

from mga.data import load_retrieval_data
from mga.hub import WeightsError, load_model, rewrite_checkpoint
from mga.model import FITTED_LATER, MGAModel

from .parts import name_model_parts, names_table


def shape_of(model: MGAModel) -> dict:
    """What two checkpoints must share to be averaged: the config's architecture and every tensor's shape."""
    config = {k: v for k, v in asdict(model.config).items() if k not in FITTED_LATER}
    return {"config": config, "tensors": {k: tuple(v.shape) for k, v in model.state_dict().items()}}


@torch.no_grad()
def soup(model: MGAModel, others: Sequence[MGAModel], keep: Sequence[str] = ()) -> MGAModel:
    """In place: every float tensor of `model` becomes the uniform mean over `model` and `others` (integer
    buffers such as BatchNorm's step counters are kept), but those whose names start with one of `keep` (e.g. the
    parts', training.part_slots.PART_PARAMETERS), which stay `model`'s."""
    shape = shape_of(model)
    if any(shape_of(other) != shape for other in others):
        raise ValueError("checkpoints of different shapes cannot be averaged (config or tensors differ)")
    states = [o.state_dict() for o in others]
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not name.startswith(tuple(keep)):
            tensor.add_(sum(s[name].to(tensor) for s in states)).div_(1 + len(others))
    model.config.extra = {**model.config.extra, "soup_of": [model.config.extra.get("train_args", {})] +
                          [o.config.extra.get("train_args", {}) for o in others],
                          **({"soup_kept_first": list(keep)} if keep else {})}
    return model


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.soup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="two or more checkpoint folders or Hub ids")
    p.add_argument("--out", required=True, help="folder for the averaged checkpoint")
    p.add_argument("--data", help="the data set they were trained on: name the soup's parts from its train split")
    p.add_argument("--keep-first", nargs="+", default=[], metavar="PREFIX",
                   help="parameters whose names start so are the first checkpoint's, not averaged (e.g. fga. "
                        "part_logits: the first one's parts on the averaged backbone)")
    args = p.parse_args(argv)
    if len(args.weights) < 2:
        p.error("--weights needs two or more checkpoints")
    try:
        others = [load_model(w) for w in args.weights[1:]]
    except WeightsError as e:
        raise SystemExit(f"{p.prog}: {e}") from None
    data = load_retrieval_data(args.data) if args.data else None
    names: dict[str, list[str]] = {}

    def averaged(model: MGAModel) -> MGAModel:
        soup(model, others, args.keep_first)
        if data is not None:  # named before the one save, so the soup is written once and never unnamed
            names.update(name_model_parts(model, data))
        return model

    rewrite_checkpoint(p.prog, args.weights[0], args.out, averaged)
    print(f"wrote {args.out}: the mean of {len(args.weights)} checkpoints")
    if names:
        print(names_table(names))
    else:
        print("its part names are the first checkpoint's; fit them with: python -m training.parts --weights "
              f"{args.out} --data DATA")


if __name__ == "__main__":
    main()
