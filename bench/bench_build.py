"""Index build throughput vs a bare model forward loop over the same images, measured in one run.

    python -m bench.bench_build [--data ../shared/data/luma-inshop] [--modes full zoom] [--rounds 3] [--workers N]
                                [--device auto] [--decode device overlap turns]

Builds the index of the Luma gallery split (183 full-size studio photos) with `index_builder` (decoding and
cropping zoom views in worker processes, encoding, chunk persistence, FAISS, writing) and compares its
throughput with forwards of the model alone over the same views, already decoded, letterboxed into tensors and
on the device, in the same forwards (the upper bound); once with full photos only and once with the default
zoom views. It also compares the builder's forwards (packed: batch_size views each, across images) with forwards
cut per loaded batch of images, as before packing. Shared machines change speed from minute to minute, so each
of `--rounds` builds is bracketed by bare passes (bare, build, bare, build, ..., bare) and compared with the mean
of the two around it, which cancels a drift; the ratios' median and range are reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from index_builder import build_index
from mga.data import load_retrieval_data
from mga.devices import autocast, forward_batch, loader_workers, overlap_decoding, resolve_device
from mga.hub import load_model
from mga.imageio import load_image
from mga.transforms import working_side
from mga.views import ZoomViews

# --decode: build_index's `overlap` (None: the device's way)
DECODES = {"device": None, "overlap": True, "turns": False}


@torch.inference_mode()
def bare_forward(model, tensors: torch.Tensor, forwards: list[slice]) -> float:
    """views/s of the model's forwards alone over `tensors` (on the model's device), one pass."""
    device = model.device
    with autocast(device):
        for f in {f.stop - f.start: f for f in forwards}.values():  # warm-up: each forward shape once
            model(tensors[f])
        sync(device)
        t = time.perf_counter()
        for f in forwards:
            model(tensors[f])
        sync(device)
    return len(tensors) / (time.perf_counter() - t)


def view_tensors(model, paths: list[Path], zoom: ZoomViews) -> tuple[torch.Tensor, list[int]]:
    """The tensors index_builder feeds the model (every view of every image, decoded and letterboxed, on the
    model's device) and the number of views of each image."""
    side = working_side(model.config.image_size)
    decoded = {p: zoom.tensors(load_image(p, max_side=side), model.transform)[1] for p in set(paths)}
    per_image = [decoded[p] for p in paths]
    return torch.cat(per_image).to(model.device), [len(v) for v in per_image]


def packed_forwards(views: int, batch_size: int) -> list[slice]:
    """index_builder's forwards (index_builder.packing): batch_size views each, across images, the last excepted."""
    return [slice(s, min(s + batch_size, views)) for s in range(0, views, batch_size)]


def per_batch_forwards(counts: list[int], images_per_batch: int, batch_size: int) -> list[slice]:
    """The forwards before packing, for comparison: the views of each loaded batch of images_per_batch images,
    cut into forwards of at most batch_size."""
    forwards, start = [], 0
    for i in range(0, len(counts), images_per_batch):
        end = start + sum(counts[i:i + images_per_batch])
        forwards += [slice(s, min(s + batch_size, end)) for s in range(start, end, batch_size)]
        start = end
    return forwards


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_throughput(gallery: str | Path, model, zoom: ZoomViews, workers: int, batch_size: int,
                     overlap: bool | None) -> tuple[float, float, float]:
    """(views/s of index_builder's encode loop, views/s end to end, the loop's share of time spent waiting for
    decoded images) building the index of `gallery`."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        man = build_index(gallery, Path(tmp) / "ix", model=model, workers=workers, zoom=zoom, batch_size=batch_size,
                          overlap=overlap, progress=False, log=lambda m: None)
        total = time.perf_counter() - t
    views = man["counts"]["views"]
    b = man["build"]
    return views / b["encode_seconds"], views / total, b["decode_wait_seconds"] / b["encode_seconds"]


def repeated_gallery(paths: list[Path], root: Path, repeat: int, tmp: Path) -> tuple[Path, list[Path]]:
    """A plain folder linking each image `repeat` times (copy-K/<its path>), and its images in build order: a
    gallery big enough that a fast device does not spend the measurement starting up."""
    for k in range(repeat):
        for p in paths:
            link = tmp / f"copy-{k}" / p.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p.resolve())
    return tmp, [p for k in range(repeat) for p in sorted(paths, key=lambda q: q.relative_to(root).as_posix())]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "luma-inshop"))
    p.add_argument("--weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="decoding processes (default: the device's, config.LOADER_WORKERS)")
    p.add_argument("--batch-size", type=int, help="most views per forward (default: the device's)")
    p.add_argument("--rounds", type=int, default=3, help="builds, each between two bare passes")
    p.add_argument("--modes", nargs="+", choices=("full", "zoom"), default=("full", "zoom"))
    p.add_argument("--repeat", type=int, default=1, help="index each image this many times (for fast devices)")
    p.add_argument("--decode", nargs="+", choices=DECODES, default=("device",),
                   help="decoding beside encoding (overlap) or in turns with it; device: the device's way "
                        "(config.OVERLAP_DECODING). Several: each round builds once with each, bare passes between")
    args = p.parse_args()
    model = load_model(args.weights, device=str(resolve_device(args.device)))
    batch_size = args.batch_size or forward_batch(model.device)
    workers = args.workers if args.workers is not None else loader_workers(model.device)
    data = load_retrieval_data(args.data)
    paths = [Path(args.data) / r.path for r in data.gallery]
    gallery = args.data
    if args.repeat > 1:
        links = tempfile.TemporaryDirectory()  # removed at exit
        gallery, paths = repeated_gallery(paths, Path(args.data), args.repeat, Path(links.name))
    n = len(paths)
    print(f"{n} images, image_size {model.config.image_size}, device {model.device}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, workers {workers}, forwards of {batch_size} views, "
          f"decoding {'beside' if overlap_decoding(model.device) else 'in turns with'} encoding by default")
    ratios = {}
    modes = {"full": ("full photos only (--zoom-grid 0)", ZoomViews(grid=0)),
             "zoom": ("zoom views (default)", ZoomViews())}
    for label, zoom in (modes[m] for m in args.modes):
        t = time.perf_counter()
        tensors, counts = view_tensors(model, paths, zoom)
        prep = len(tensors) * len(set(paths)) / n / (time.perf_counter() - t)  # each distinct image decoded once
        forwards = packed_forwards(len(tensors), batch_size)
        unpacked = per_batch_forwards(counts, zoom.images_per_batch(batch_size), batch_size)
        print(f"{label}: {len(tensors)} views ({len(tensors) / n:.1f} per image); decode+crop+letterbox alone, "
              f"1 process: {prep:.1f} views/s")
        before = bare_forward(model, tensors, forwards)
        cut = bare_forward(model, tensors, unpacked)
        after = bare_forward(model, tensors, forwards)
        print(f"  bare forwards of {batch_size} views across images (the builder's) {(before + after) / 2:7.1f} views/s"
              f" | cut per loaded batch ({len(tensors) / len(unpacked):.1f} views per forward, before packing) "
              f"{cut:7.1f} views/s | packed / cut {(before + after) / 2 / cut:.2f}")
        before = after
        for r in range(args.rounds):
            for decode in args.decode:
                enc, total, wait = build_throughput(gallery, model, zoom, workers, batch_size, DECODES[decode])
                after = bare_forward(model, tensors, forwards)
                bare = (before + after) / 2
                ratios.setdefault(f"{label}, decoding: {decode}", []).append(enc / bare)
                print(f"  round {r + 1}, decoding {decode}: bare forwards {before:7.1f} then {after:7.1f} views/s | "
                      f"index_builder encode loop {enc:7.1f} views/s ({enc * n / len(tensors):.1f} images/s), end to "
                      f"end {total:7.1f} views/s, waiting for decoding {wait:.0%} | ratio {enc / bare:.2f}")
                before = after
        del tensors
    print("RESULT build/bare ratio (encode loop), median [range] over rounds: "
          + ", ".join(f"{k} {statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for k, v in ratios.items())
          + "  (goal >= 0.9)")


if __name__ == "__main__":
    main()
