"""Server-side latency of one app query vs encoding one image alone.

    python -m bench.bench_app_latency [--index DIR] [--queries 20]

Per query, from a photo file (as the photo box hands it over) to everything the search callback returns
(ui.callbacks.Callbacks.search_photo): the photo decoded, searched (encode, FAISS, ATA re-rank, the colour and the
garments), the results' gallery copies, the first match's words (how sure, what decided it) and the garment choice.
Then what the UI fetches right after (Callbacks.after_search): the first match's heatmaps on both photos and its
chart (the query's cells split out of its global token, the match's side one more forward of the view that
matched), the crop view and the photo with its garments outlined. Baseline, same run: the photo decoded and encoded
alone (model.encode_images). Prints p50 of each and their ratios (goal for the query <= 1.25), and where the query's
time goes: p50 of each step the engine times (SearchResult.timings) and of the callback's rest.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mga import DEFAULT_INDEX_DIR, load_image  # noqa: E402
from ui.callbacks import Callbacks  # noqa: E402
from ui.settings import example_paths, load_engine  # noqa: E402


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=str(DEFAULT_INDEX_DIR))
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()

    loaded = load_engine(None, args.index)
    engine, model, callbacks = loaded.engine, loaded.engine.model, Callbacks(loaded)
    paths = example_paths(limit=100) or sorted(str(p) for p in (Path(args.index) / "..").glob("**/*.jpg"))[:20]
    queries = [paths[i % len(paths)] for i in range(args.queries)]

    engine.colours.warm()  # what the app reads in the background at start-up (ui.settings.LoadedEngine)
    for path in paths[:2]:  # warm-up: first-call allocations, lazy imports (matplotlib)
        model.encode_images([load_image(path)])
        ui = callbacks.search_photo(path, args.k, None, False)[1]
        callbacks.after_search(ui, 0)

    enc, app, opening, steps = [], [], [], []
    for path in queries:  # interleaved, so drifts in machine load hit both alike
        t0 = time.perf_counter()
        model.encode_images([load_image(path)])
        t1 = time.perf_counter()
        ui = callbacks.search_photo(path, args.k, None, False)[1]
        t2 = time.perf_counter()
        callbacks.after_search(ui, 0)
        t3 = time.perf_counter()
        enc.append((t1 - t0) * 1e3)
        app.append((t2 - t1) * 1e3)
        opening.append((t3 - t2) * 1e3)
        steps.append({**ui.result.timings, "rest of the callback": app[-1] - ui.result.timings["total_ms"]})

    print(f"index {args.index}: {engine.info['images']} images; model {engine.info['weights']} "
          f"(input {engine.info['image_size']} px); k={args.k}; {args.queries} queries "
          f"({len(paths)} distinct photos); "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"decode and encode one photo        p50: {p50(enc):8.1f} ms")
    print(f"app query (the search callback)     p50: {p50(app):8.1f} ms")
    print(f"then the #1's heatmaps and the rest p50: {p50(opening):8.1f} ms")
    print(f"ratio app query / encode one image: {p50(app) / p50(enc):.2f}  (goal <= 1.25)")
    print(f"ratio the step after / encode:      {p50(opening) / p50(enc):.2f}")
    print(f"ratio query and heatmaps / encode:  {p50([a + o for a, o in zip(app, opening)]) / p50(enc):.2f}")
    print("where the query's time goes, p50 ms: "
          + ", ".join(f"{k.removesuffix('_ms')} {p50([s[k] for s in steps]):.1f}" for k in steps[0]))


if __name__ == "__main__":
    main()
