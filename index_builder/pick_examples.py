"""Choose the app's example queries by a stated rule, and copy them to assets/examples.

The rule: among the query photos of the demo gallery's products (Luma's test items; none of them is in the
gallery), in file order, take per category the first photo whose product the app finds at #1 with a confident
match (mga.confidence.CONFIDENT); then one shopper-style photo: the first such query photo pasted onto a real
background (distractors/validation, the training side) whose product is still found at #1 confidently. The hit
rate of all query photos (product at #1) is printed and written beside the examples, so that what the examples
promise can be read against it. The app's top 5 products for each example are recorded in
assets/examples-expected.json (not beside them: the app serves that folder), and a test holds every later change
to the engine, the index or the app to them, until the examples are picked again for new weights.

    python -m index_builder.pick_examples [--index assets/demo-index] [--luma ../shared/data/luma-inshop]
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import random
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from mga.config import ASSETS_DIR, DEFAULT_INDEX_DIR, SHARED_DATA, TRAIN_BACKGROUNDS
from mga.confidence import CONFIDENT
from mga.data import category_key, category_of
from mga.imageio import load_image
from mga.search import SearchEngine
from mga.transforms import Backgrounds, garment_mask

EXAMPLE_SIDE = 480
EXPECTED = ASSETS_DIR / "examples-expected.json"
RECORDED_TOP = 5


def found_first(engine: SearchEngine, img: Image.Image, item_id: str) -> tuple[bool, bool]:
    """(the product is #1, and confidently so)."""
    best = engine.search(img, k=1, explain=False, products=True).matches[0]
    return best.item_id == item_id, best.item_id == item_id and (best.confidence or 0.0) >= CONFIDENT


def top_products(engine: SearchEngine, image: Path) -> list[dict]:
    """The app's top products for an example file: item id and score."""
    res = engine.search(image, k=RECORDED_TOP, explain=False, products=True)
    return [{"item_id": m.item_id, "score": round(m.score, 6)} for m in res.matches]


def record_results(engine: SearchEngine, examples: Path, expected: Path = EXPECTED) -> None:
    """What the app shows for each example now, with the weights it was shown with."""
    results = {p.name: top_products(engine, p) for p in sorted(examples.glob("*.jpg"))}
    expected.write_text(json.dumps({"fingerprint": engine.fingerprint, "results": results}, indent=1)
                                     + "\n")


def on_background(img: Image.Image, seed: int) -> Image.Image:
    """The garment (everything not studio-white) on a real photo, as a shopper's photo has it."""
    random.seed(seed)
    bg = Backgrounds(sorted(TRAIN_BACKGROUNDS.rglob("*.jpg")), max(img.size)).sample(img.size)
    mask = Image.fromarray(garment_mask(img).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
    return Image.composite(img, bg, mask.filter(ImageFilter.GaussianBlur(2)))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m index_builder.pick_examples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR))
    p.add_argument("--luma", default=str(SHARED_DATA / "luma-inshop"))
    p.add_argument("--out", default=str(ASSETS_DIR / "examples"))
    args = p.parse_args(argv)
    luma, out = Path(args.luma), Path(args.out)
    engine = SearchEngine.load(args.index)
    products = {it["item_id"] for it in engine.index.items}
    with open(luma / "items.csv", newline="") as f:
        queries = [r for r in csv.DictReader(f) if r["evaluation_status"] == "query" and r["item_id"] in products]
    picked: dict[str, tuple[dict, Image.Image]] = {}
    hits = 0
    for r in queries:
        img = load_image(luma / r["image_name"], max_side=EXAMPLE_SIDE)
        first, confident = found_first(engine, img, r["item_id"])
        hits += first
        key = category_key(category_of(r["image_name"]))
        if confident and key not in picked:
            picked[key] = (r, img)
    for n, (r, img) in enumerate(picked.values()):
        shopper = on_background(img, n)
        if found_first(engine, shopper, r["item_id"])[1]:
            picked["shopper's photo"] = (r, shopper)
            break
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for key, (r, img) in picked.items():
        name = re.sub(r"[^a-z0-9]+", "-", f"{key} {html.unescape(r['product_name']).lower()}").strip("-") + ".jpg"
        img.save(out / name, "JPEG", quality=90)
    shutil.copy(luma / "LICENSE-OSL-3.0.txt", out / "LICENSE-OSL-3.0.txt")
    record_results(engine, out)
    rate = f"{hits} of {len(queries)} query photos ({hits / len(queries):.0%}) find their product at #1"
    (out / "README.md").write_text(
        "Example queries for the app, chosen by `python -m index_builder.pick_examples` (its docstring states the "
        "rule): per category the first query photo of a demo-gallery product that the embedded default finds at #1 "
        "with a confident match, and one of them on a real background. Query photos are never in the gallery. "
        f"Measured when chosen: {rate}. From luma-inshop (magento/magento2-sample-data), license OSL-3.0 "
        "(LICENSE-OSL-3.0.txt).\n")
    print(f"{rate}; {len(picked)} examples in {out}: {', '.join(picked)}")


if __name__ == "__main__":
    main()
