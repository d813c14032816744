"""Distractors as hubs: the test queries through the engine, against the test gallery alone and with the 713
phone photos of ../shared/data/distractors merged in, measured in one run.

    python -m bench.distractors --data ../shared/data/luma-inshop [--zoom-grid 4] [--out runs/hubs]

Builds both indexes with index_builder (the app's path: coarse + ATA, queries decoded at full size) and prints
R@1 / R@10 of each, and the ratio with distractors / without.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Sequence

from index_builder import build_index, merge_indexes
from mga.config import PROJECT_ROOT
from mga.data import load_retrieval_data
from mga.hub import describe_weights, load_model
from mga.search import SearchEngine
from mga.views import ZoomViews

DISTRACTORS = PROJECT_ROOT.parent / "shared" / "data" / "distractors"


def recall_through_engine(engine: SearchEngine, data) -> tuple[float, float]:
    """R@1 and R@10 of the data set's queries, searched one by one like the app does."""
    hits1 = hits10 = 0
    for r in data.query:
        items = [engine.index.items[m.index]["item_id"] for m in engine.search(data.root / r.path, k=10,
                                                                                 explain=False).matches]
        hits1 += bool(items) and items[0] == r.item_id
        hits10 += r.item_id in items
    return hits1 / len(data.query), hits10 / len(data.query)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.distractors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="In-shop data set: its gallery split and its queries")
    p.add_argument("--distractors", default=str(DISTRACTORS))
    p.add_argument("--weights")
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="gallery zoom views (0: off)")
    p.add_argument("--out", help="keep the indexes here (default: a temporary folder)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    quiet = dict(progress=False, log=lambda m: None, zoom=ZoomViews(grid=args.zoom_grid))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        build_index(args.data, out / "test", model=model, **quiet)
        build_index(args.distractors, out / "distractors", model=model, **quiet)
        merge_indexes(out / "with-distractors", [out / "test", out / "distractors"], progress=False,
                      log=lambda m: None)
        results = {}
        for name in ("test", "with-distractors"):
            engine = SearchEngine.load(out / name, model=model, weights=args.weights)
            r1, r10 = recall_through_engine(engine, data)
            results[name] = {"R@1": r1, "R@10": r10, "images": len(engine.index), "views": engine.index.views}
    print(f"weights {describe_weights(args.weights)}; {len(data.query)} queries; zoom grid {args.zoom_grid}")
    for name, r in results.items():
        print(f"{name:<17} {r['images']:5d} images {r['views']:6d} views  R@1 {r['R@1']:.3f}  R@10 {r['R@10']:.3f}")
    a, b = results["test"], results["with-distractors"]
    print(f"ratio with / without distractors: R@1 {b['R@1'] / max(a['R@1'], 1e-9):.2f}, "
          f"R@10 {b['R@10'] / max(a['R@10'], 1e-9):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
