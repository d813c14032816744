"""CPU encode time per image of each backbone under MGA (batch of 1 and of 32), for choosing the default.

    python -m bench.bench_encode [--backbones tf_efficientnet_lite0 ...] [--repeats 10] [--anchor]

Prints ms per image and the ratio to the first backbone, measured in the same run. --anchor times the embedded
default instead, with and without its anchor (training.anchor: a frozen copy of the pretrained backbone beside the
trained one, sharing the stages training left untouched; trained weights, so that what is shared is real).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

import torch

from mga.backbones import BACKBONES
from training.anchor import with_anchor
from mga.config import MGAConfig
from mga.hub import load_model
from mga.model import MGAModel


@torch.inference_mode()
def ms_per_image(model: MGAModel, batch: int, repeats: int) -> float:
    x = torch.randn(batch, 3, model.config.image_size, model.config.image_size)
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.bench_encode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--anchor", action="store_true", help="the embedded default with and without its anchor")
    args = p.parse_args(argv)
    if args.anchor:
        default = load_model(None)
        bare = with_anchor(default, 0.0).to(memory_format=torch.channels_last)  # as load_model lays it out
        models = {"embedded default, no anchor": bare,
                  f"embedded default (anchor {default.config.anchor:g})": default}
    else:
        models = {name: MGAModel(MGAConfig(backbone=name)).eval() for name in args.backbones}
    rows = {label: {"batch 1": ms_per_image(model, 1, args.repeats), "batch 32": ms_per_image(model, 32, 3)}
            for label, model in models.items()}
    base = next(iter(rows.values()))
    print(f"{'model':<36} {'ms/img b=1':>11} {'ms/img b=32':>12} {'ratio b=1':>10}  "
          f"(threads {torch.get_num_threads()})")
    for name, r in rows.items():
        print(f"{name:<36} {r['batch 1']:11.1f} {r['batch 32']:12.1f} {r['batch 1'] / base['batch 1']:10.2f}")
    return rows


if __name__ == "__main__":
    main()
