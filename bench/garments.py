"""Picking the garment: what `mga.garments` offers on the test split's query photos, and what searching each
garment alone gives.

    python -m bench.garments --data ../shared/data/luma-inshop [--index assets/demo-index] [--json out.json]
                             [--sheet out.jpg]

Each query photo is searched whole (the app's default, one result per product): the garment found is the one the
results are of, and its kind should be the query product's kind (items.csv). Where the photo shows another
garment, that one is searched alone (its region, among the shop's categories of its kind) and every result must be
of its kind. The found garment is also searched alone, to compare with the whole photo's R@1. Prints what finding
the garments costs a search, and what searching one costs against searching the whole photo. `--sheet` draws the
regions on some queries.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from bench.colour import K, photo_colours, query_paths, test_split_parser
from mga.imageio import load_photo
from mga.part_names import garment_kind
from mga.search import SearchEngine


def measure(engine: SearchEngine, photos: Sequence[Image.Image], truth: Sequence[tuple[str, str]]) -> dict:
    """truth: each photo's (item id, category)."""
    shop = engine.categories
    n = len(photos)
    whole_hits = named = whole_hits_named = own_hits = kind_right = offered = other_pure = 0
    other_conf, find_ms, whole_ms, alone_ms = [], [], [], []
    for img, (item, category) in zip(photos, truth):
        t = time.perf_counter()
        res = engine.search(img, k=K, products=True)
        whole_ms.append((time.perf_counter() - t) * 1e3)
        find_ms.append(res.timings["garments_ms"])
        whole_hits += bool(res.matches) and res.matches[0].item_id == item
        found = next((g for g in res.garments if g.found), None)
        if found is not None:  # garments are named on photos whose #1 is likely the shop's product
            named += 1
            whole_hits_named += res.matches[0].item_id == item
            kind_right += found.kind == garment_kind(category)
            own = engine.search(found.crop(img), k=K, products=True, category=found.categories(shop))
            own_hits += bool(own.matches) and own.matches[0].item_id == item
        for g in (g for g in res.garments if not g.found):
            offered += 1
            t = time.perf_counter()
            other = engine.search(g.crop(img), k=K, products=True, category=g.categories(shop))
            alone_ms.append((time.perf_counter() - t) * 1e3)
            other_pure += all(garment_kind(m.category) == g.kind for m in other.matches)
            other_conf.append(other.matches[0].confidence if other.matches else 0.0)
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    of_named = lambda x: x / named if named else float("nan")  # noqa: E731
    return {"queries": n, "whole_photo_r1": whole_hits / n, "garments_named": named / n,
            "whole_photo_r1_where_named": of_named(whole_hits_named), "found_garment_alone_r1": of_named(own_hits),
            "found_kind_is_the_products": of_named(kind_right), "other_garment_offered": offered / n,
            "other_garment_results_all_of_its_kind": other_pure / offered if offered else float("nan"),
            "other_garment_top_confidence_median": med(other_conf),
            "find_garments_ms_p50": med(find_ms), "whole_search_ms_p50": med(whole_ms),
            "garment_search_ms_p50": med(alone_ms)}


def sheet(engine: SearchEngine, photos: Sequence[Image.Image], out: Path, tile: int = 200) -> None:
    """The regions found on some photos: the garment the search found in red, the other one in blue."""
    tiles = []
    for img in photos:
        res = engine.search(img, k=1, explain=False, products=True)
        vis = img.convert("RGB")
        draw = ImageDraw.Draw(vis)
        w, h = vis.size
        for g in res.garments:
            x0, y0, x1, y1 = g.box
            draw.rectangle([x0 * w, y0 * h, x1 * w - 1, y1 * h - 1], outline="#d62728" if g.found else "#1f77b4",
                           width=max(2, w // 80))
        vis.thumbnail((tile, tile * 5 // 4))
        tiles.append(vis)
    cols = 6
    canvas = Image.new("RGB", (tile * cols, tile * 5 // 4 * -(-len(tiles) // cols)), "white")
    for i, t in enumerate(tiles):
        canvas.paste(t, ((i % cols) * tile, (i // cols) * (tile * 5 // 4)))
    canvas.save(out)


def main(argv: Sequence[str] | None = None) -> dict:
    p = test_split_parser("python -m bench.garments", __doc__)
    p.add_argument("--sheet", help="an image (PNG, JPEG) of the regions on every 6th query")
    args = p.parse_args(argv)
    data = Path(args.data)
    rows = photo_colours(data)
    queries = query_paths(rows)
    engine = SearchEngine.load(args.index, weights=args.weights)
    by_item = {str(it.get("item_id", "")): str(it.get("category", "")) for it in engine.index.items}
    truth = [(rows[q][0], by_item.get(rows[q][0], "")) for q in queries]
    photos = [load_photo(data / q) for q in queries]
    r = measure(engine, photos, truth)
    print(f"{r['queries']} query photos. Whole photo (the app's default): R@1 {r['whole_photo_r1']:.3f}. Garments "
          f"named on {r['garments_named']:.3f} of them (#1 likely the shop's product); there, the whole photo's R@1 "
          f"{r['whole_photo_r1_where_named']:.3f}, the garment found is the product's kind in "
          f"{r['found_kind_is_the_products']:.3f}, and searched alone its R@1 is {r['found_garment_alone_r1']:.3f}")
    print(f"another garment offered on {r['other_garment_offered']:.3f} of the photos; searched alone, all its "
          f"results of its kind in {r['other_garment_results_all_of_its_kind']:.3f}; its #1's confidence, median "
          f"{r['other_garment_top_confidence_median']:.2f}")
    print(f"cost: finding the garments {r['find_garments_ms_p50']:.1f} ms of a {r['whole_search_ms_p50']:.0f} ms "
          f"search (p50); searching one garment {r['garment_search_ms_p50']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    if args.sheet:
        sheet(engine, photos[::6], Path(args.sheet))
    return r


if __name__ == "__main__":
    main()
