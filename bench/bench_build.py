"""Index build throughput vs a bare model forward loop over the same images, measured in one run.

    python bench/bench_build.py [--data ../shared/data/luma-inshop] [--workers 2] [--batch-size 32]

Builds the index of the Luma gallery split (183 full-size studio photos) with `index_builder` (decoding in
DataLoader workers, encoding, chunk persistence, FAISS, writing) and compares its images/s with
`model(x)` over the same images already decoded and letterboxed into tensors (the upper bound).
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


def bare_forward(model, tensors: torch.Tensor, batch_size: int) -> float:
    """images/s of model forward alone (best of 2 passes)."""
    best = 0.0
    with torch.inference_mode():
        model(tensors[:batch_size])  # warm-up
        for _ in range(2):
            t = time.perf_counter()
            for s in range(0, len(tensors), batch_size):
                model(tensors[s:s + batch_size])
            best = max(best, len(tensors) / (time.perf_counter() - t))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "luma-inshop"))
    p.add_argument("--weights")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    n = len(data.gallery)
    t = time.perf_counter()
    tensors = torch.stack([model.transform(load_image(Path(args.data) / r.path)) for r in data.gallery])
    prep_ips = n / (time.perf_counter() - t)
    bare = bare_forward(model, tensors, args.batch_size)
    print(f"{n} images, image_size {model.config.image_size}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, workers {args.workers}")
    print(f"bare model forward      : {bare:7.1f} img/s   (decode+letterbox alone, 1 process: {prep_ips:.1f} img/s)")
    rows = []
    for fast, thumbs in ((True, 0), (False, 0), (True, 256)):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            man = build_index(args.data, Path(tmp) / "ix", model=model, workers=args.workers,
                              batch_size=args.batch_size, fast_decode=fast, thumb_size=thumbs, progress=False, log=lambda m: None)
            total = time.perf_counter() - t
        enc_ips = n / man["build"]["encode_seconds"]
        e2e_ips = n / total
        label = ("fast JPEG decode" if fast else "full JPEG decode") + (f", {thumbs}px thumbnails" if thumbs else "")
        rows.append((label, enc_ips, e2e_ips))
        print(f"index_builder ({label}): encode loop {enc_ips:7.1f} img/s (ratio {enc_ips / bare:.2f}), "
              f"end to end {e2e_ips:7.1f} img/s (ratio {e2e_ips / bare:.2f})")
    print(f"RESULT build/bare ratio (encode loop, default settings): {rows[0][1] / bare:.2f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
