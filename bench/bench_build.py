"""Index build throughput vs a bare model forward loop over the same images, measured in one run.

    python bench/bench_build.py [--data ../shared/data/luma-inshop] [--workers 2] [--batch-size 32]

Builds the index of the Luma gallery split (183 full-size studio photos) with `index_builder` (decoding and
cropping zoom views in DataLoader workers, encoding, chunk persistence, FAISS, writing) and compares its
throughput with `model(x)` over the same views already decoded and letterboxed into tensors (the upper bound),
once with full photos only and once with the default zoom views.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from index_builder import build_index  # noqa: E402
from mga.data import load_retrieval_data  # noqa: E402
from mga.hub import load_model  # noqa: E402
from mga.imageio import load_image  # noqa: E402
from mga.transforms import working_side  # noqa: E402
from mga.views import ZoomViews  # noqa: E402


def bare_forward(model, tensors: torch.Tensor, batches: list[slice]) -> float:
    """views/s of model forward alone over the same batches (best of 2 passes)."""
    best = 0.0
    with torch.inference_mode():
        model(tensors[batches[0]])  # warm-up
        for _ in range(2):
            t = time.perf_counter()
            for b in batches:
                model(tensors[b])
            best = max(best, len(tensors) / (time.perf_counter() - t))
    return best


def view_tensors(model, paths: list[Path], zoom: ZoomViews, batch_size: int) -> tuple[torch.Tensor, list[slice]]:
    """The tensors index_builder feeds the model (every view of every image, decoded and letterboxed) and its
    batches (all views of batch_size // views-per-image images at a time)."""
    side = working_side(model.config.image_size)
    per_image = [torch.stack([model.transform(v) for v in zoom.crops(load_image(p, max_side=side))[1]])
                 for p in paths]
    ends = torch.tensor([len(v) for v in per_image]).cumsum(0).tolist()
    step = max(1, batch_size // zoom.max_per_image)
    starts = [0] + ends[step - 1::step]
    bounds = sorted(set(starts + [ends[-1]]))
    return torch.cat(per_image), [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "luma-inshop"))
    p.add_argument("--weights")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    paths = [Path(args.data) / r.path for r in data.gallery]
    n = len(paths)
    print(f"{n} images, image_size {model.config.image_size}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, workers {args.workers}")
    ratios = {}
    for label, zoom in (("full photos only (--zoom-grid 0)", ZoomViews(grid=0)), ("zoom views (default)", ZoomViews())):
        t = time.perf_counter()
        tensors, batches = view_tensors(model, paths, zoom, args.batch_size)
        prep = len(tensors) / (time.perf_counter() - t)
        bare = bare_forward(model, tensors, batches)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            man = build_index(args.data, Path(tmp) / "ix", model=model, workers=args.workers, zoom=zoom,
                              batch_size=args.batch_size, progress=False, log=lambda m: None)
            total = time.perf_counter() - t
        views = man["counts"]["views"]
        enc = views / man["build"]["encode_seconds"]
        ratios[label] = enc / bare
        print(f"{label}: {views} views ({views / n:.1f} per image); decode+crop+letterbox alone, 1 process: "
              f"{prep:.1f} views/s")
        print(f"  bare model forward over the same batches: {bare:7.1f} views/s "
              f"({len(tensors) / len(batches):.1f} views per forward)")
        print(f"  index_builder encode loop               : {enc:7.1f} views/s (ratio {enc / bare:.2f}), "
              f"{n / man['build']['encode_seconds']:.1f} images/s")
        print(f"  index_builder end to end                : {views / total:7.1f} views/s (ratio {views / total / bare:.2f}), "
              f"{n / total:.1f} images/s")
    print("RESULT build/bare ratio (encode loop): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
          + "  (goal >= 0.9)")


if __name__ == "__main__":
    main()
