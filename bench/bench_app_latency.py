"""Server-side latency of one app query vs encoding one image alone.

    python -m bench.bench_app_latency [--index DIR] [--queries 20]

Per query, from a decoded image (RGB PIL) to everything the search callback shows: search (encode with the
cells' shares, FAISS, ATA re-rank, each match's score spread over the query's cells), the first match's details
(the query's heatmap, the chart) (ui.results.run_search + ui.details.match_details without the match's side).
Then what the UI fetches right after, opening that match: its side of the heatmap (one more forward of the view
that matched, ui.details.match_overlay). Baseline, same run: model.encode_images([image]) alone. Prints p50 of
each and their ratios (goal for the query <= 1.5).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ui.details import match_details, match_overlay
from ui.results import run_search
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

    engine.colours.warm()  # what the app reads in the background at start-up (ui.settings.LoadedEngine)
    for img in images[:2]:  # warm-up: first-call allocations, lazy imports (matplotlib)
        model.encode_images([img])
        ui = run_search(loaded, img, args.k)
        match_details(loaded, ui, ui.result.matches[0])
        match_overlay(loaded, ui, ui.result.matches[0])

    enc, app, search_only, opening = [], [], [], []
    for img in queries:  # interleaved, so drifts in machine load hit both alike
        t0 = time.perf_counter()
        model.encode_images([img])
        t1 = time.perf_counter()
        ui = run_search(loaded, img, args.k)
        t2 = time.perf_counter()
        match_details(loaded, ui, ui.result.matches[0], match_side=False)
        t3 = time.perf_counter()
        match_overlay(loaded, ui, ui.result.matches[0])
        t4 = time.perf_counter()
        enc.append((t1 - t0) * 1e3)
        search_only.append((t2 - t1) * 1e3)
        app.append((t3 - t1) * 1e3)
        opening.append((t4 - t3) * 1e3)

    print(f"index {args.index}: {engine.info['images']} images; model {engine.info['weights']} "
          f"(input {engine.info['image_size']} px); k={args.k}; {args.queries} queries "
          f"({len(images)} distinct, sizes e.g. {images[0].size}); "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"encode one image (model.encode_images) p50: {p50(enc):8.1f} ms")
    print(f"search, k results explained        p50: {p50(search_only):8.1f} ms")
    print(f"app query (search + details)        p50: {p50(app):8.1f} ms")
    print(f"opening the match (its heatmap)     p50: {p50(opening):8.1f} ms")
    print(f"ratio app query / encode one image: {p50(app) / p50(enc):.2f}  (goal <= 1.5)")
    print(f"ratio search / encode:              {p50(search_only) / p50(enc):.2f}")
    print(f"ratio opening a match / encode:     {p50(opening) / p50(enc):.2f}")


if __name__ == "__main__":
    main()
