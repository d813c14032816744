"""The shopper's colour: how often a result's card shows the product in the colour of the query photo.

    python -m bench.colour --data ../shared/data/luma-inshop [--index assets/demo-index] [--clutter] [--json out.json]

The test split's query photos are searched (one result per product) in an index of its gallery photos (the demo
index is one); for each query whose #1 is its own product, the colour of the photo its card shows (mga.colour: the
product's photo nearest the garment colour of the query) is compared with the query photo's colour (items.csv
knows both). Queries whose product the gallery has in their colour count towards the card's hit rate (target
>= 0.9); the others should be said not to come in that colour (`Match.in_query_colour` false). "Before" is the
card as it was: the photo that matched. With `--clutter` the queries are pasted onto real phone photos
(distractors/test, bench.robustness) as well. Also prints what the colour costs a search: cold (every product's
photos read for this search) and warm (read before).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.robustness import clutter_backgrounds, on_clutter
from mga.config import DEFAULT_INDEX_DIR, SHARED_DATA, TEST_DISTRACTORS
from mga.imageio import load_photo
from mga.search import SearchEngine

K = 10  # the app's default number of products


def photo_colours(data: Path) -> dict[str, tuple[str, str, str]]:
    """items.csv: each photo's (item id, colour, split) by its path."""
    with open(data / "items.csv", newline="") as f:
        return {r["image_name"]: (r["item_id"], r["color"], r["evaluation_status"]) for r in csv.DictReader(f)}


def test_split_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments of a bench over the test split's queries in an index of its gallery (this one, bench.garments,
    bench.skin): --data, --index, --weights, --json."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED_DATA / "luma-inshop"))
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="an index of the test split's gallery photos")
    p.add_argument("--weights", help="checkpoint folder or Hub id (default: the embedded default)")
    p.add_argument("--json")
    return p


def query_paths(rows: dict[str, tuple[str, str, str]]) -> list[str]:
    """The test split's query photos of `photo_colours`, in order."""
    return sorted(path for path, (_, _, split) in rows.items() if split == "query")


def measure(engine: SearchEngine, photos: Sequence, truth: Sequence[tuple[str, str]]) -> dict:
    """Search each photo; over those whose #1 is their own product (truth: item id, colour), how often the card's
    colour and the matched photo's are the query's, and how often a product that lacks it is said to."""
    index_colour: dict[str, set[str]] = {}
    for it in engine.index.items:
        index_colour.setdefault(str(it.get("item_id", "")), set()).add(str(it.get("meta", {}).get("color", "")))
    found = has = card = before = lacks = said = false_flag = 0
    cold, warm = [], []
    for img, (item, colour) in zip(photos, truth):
        engine.colours.forget()  # cold: no photo read yet
        res = engine.search(img, k=K, explain=False, products=True)
        cold.append(res.timings.get("colour_ms", 0.0))
        warm.append(engine.search(img, k=K, explain=False, products=True).timings.get("colour_ms", 0.0))
        if not res.matches or res.matches[0].item_id != item:
            continue
        m = res.matches[0]
        found += 1
        if colour in index_colour.get(item, set()):
            has += 1
            card += m.shown_colour == colour
            before += m.metadata.get("color") == colour
            false_flag += m.in_query_colour is False
        else:
            lacks += 1
            said += m.in_query_colour is False
    return {"queries": len(photos), "found_at_1": found, "in_its_colour": has,
            "card_colour_right": card / has if has else float("nan"),
            "matched_photo_colour_right": before / has if has else float("nan"),
            "said_not_in_colour_wrongly": false_flag / has if has else float("nan"),
            "not_in_its_colour": lacks, "said_not_in_colour": said / lacks if lacks else float("nan"),
            "colour_ms_cold_mean": float(np.mean(cold)), "colour_ms_warm_mean": float(np.mean(warm))}


def main(argv: Sequence[str] | None = None) -> dict:
    p = test_split_parser("python -m bench.colour", __doc__)
    p.add_argument("--clutter", action="store_true", help="also the queries pasted onto real phone photos")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = Path(args.data)
    colours = photo_colours(data)
    queries = query_paths(colours)
    truth = [colours[q][:2] for q in queries]
    photos = [load_photo(data / q) for q in queries]
    engine = SearchEngine.load(args.index, weights=args.weights)
    result = {"clean": measure(engine, photos, truth)}
    if args.clutter:
        rng = random.Random(args.seed)
        backgrounds = clutter_backgrounds(TEST_DISTRACTORS)
        result["clutter"] = measure(engine, [on_clutter(img, rng, backgrounds) for img in photos], truth)
    for name, r in result.items():
        print(f"{name}: {r['queries']} query photos, {r['found_at_1']} with their product at #1; of those, "
              f"{r['in_its_colour']} whose product the gallery has in the query's colour and {r['not_in_its_colour']} "
              f"whose product it lacks in it")
        print(f"  card shows the query's colour: {r['card_colour_right']:.3f} (before, the matched photo: "
              f"{r['matched_photo_colour_right']:.3f}; target >= 0.9); said not in that colour though it is: "
              f"{r['said_not_in_colour_wrongly']:.3f}")
        print(f"  product lacks the query's colour and the card says so: {r['said_not_in_colour']:.3f}")
        print(f"  colour cost per search of {K} products: {r['colour_ms_cold_mean']:.1f} ms cold (photos read the "
              f"first time), {r['colour_ms_warm_mean']:.1f} ms warm")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
