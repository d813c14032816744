"""Server-side latency of one app query vs encoding one image alone.

    python -m bench.bench_app_latency [--index DIR] [--queries 20]

Per query, from a decoded image (RGB PIL) to everything the UI shows: search (encode, FAISS, ATA re-rank),
heatmaps for all k results, and the selected match's overlays and contribution chart
(ui.results.run_search + match_details, exactly what the search callback runs). Baseline, same run:
model.encode_images([image]) alone. Prints p50 of each and their ratio (goal <= 1.5).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ui.results import match_details, run_search
from ui.settings import example_paths, load_engine
from mga.config import DEFAULT_INDEX_DIR
from mga.imageio import load_image


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=str(DEFAULT_INDEX_DIR))
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()

    loaded = load_engine(None, args.index)
    engine, model = loaded.engine, loaded.engine.model
    paths = example_paths(limit=100) or sorted(str(p) for p in (Path(args.index) / "..").glob("**/*.jpg"))[:20]
    images = [load_image(p) for p in paths]
    queries = [images[i % len(images)] for i in range(args.queries)]

    for img in images[:2]:  # warm-up: first-call allocations, lazy imports (matplotlib)
        model.encode_images([img])
        ui = run_search(loaded, img, args.k)
        match_details(loaded, ui.query, ui.result.matches[0])

    enc, app, search_only = [], [], []
    for img in queries:  # interleaved, so drifts in machine load hit both alike
        t0 = time.perf_counter()
        model.encode_images([img])
        t1 = time.perf_counter()
        ui = run_search(loaded, img, args.k)
        t2 = time.perf_counter()
        match_details(loaded, ui.query, ui.result.matches[0])
        t3 = time.perf_counter()
        enc.append((t1 - t0) * 1e3)
        search_only.append((t2 - t1) * 1e3)
        app.append((t3 - t1) * 1e3)

    print(f"index {args.index}: {engine.info['images']} images; model {engine.info['weights']} "
          f"(input {engine.info['image_size']} px); k={args.k}; {args.queries} queries "
          f"({len(images)} distinct, sizes e.g. {images[0].size}); "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"encode one image (model.encode_images) p50: {p50(enc):8.1f} ms")
    print(f"search + heatmaps for k results    p50: {p50(search_only):8.1f} ms")
    print(f"app query (search + overlays/chart)  p50: {p50(app):8.1f} ms")
    print(f"ratio app query / encode one image: {p50(app) / p50(enc):.2f}  (goal <= 1.5)")
    print(f"ratio search+heatmaps / encode:     {p50(search_only) / p50(enc):.2f}")


if __name__ == "__main__":
    main()
