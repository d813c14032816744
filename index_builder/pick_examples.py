"""Choose the app's example queries by a stated rule, and copy them to assets/examples.

The rule: among the query photos of the demo gallery's products (Luma's test items; none of them is in the
gallery), in file order, take per category the first photo whose product the app finds at #1 with a confident
match (mga.confidence.CONFIDENT); then one honest phone photo of a garment the shop does not sell, so that the app
shows what it says then: a dress of distractors/validation (real phone photos, CC0; the shop sells no dresses),
chosen by eye as one nobody would take for a top (NOT_SOLD), if its best product is not a confident match. The hit
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
import re
import shutil
from pathlib import Path
from typing import Sequence

from PIL import Image

from mga.config import ASSETS_DIR, DEFAULT_INDEX_DIR, SHARED_DATA, TRAIN_BACKGROUNDS
from mga.confidence import CONFIDENT
from mga.data import category_key, category_of
from mga.imageio import load_image
from mga.search import SearchEngine

EXAMPLE_SIDE = 480
# a sleeveless gingham dress with a full skirt, laid on a floor: a kind of garment the demo shop has no product of
NOT_SOLD = TRAIN_BACKGROUNDS / "dress" / "35f5fecb-755a-45d6-ac3d-3feb8299dc87.jpg"
NOT_SOLD_NAME = "not-sold-dress-phone-photo.jpg"
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


def not_sold(engine: SearchEngine) -> Image.Image | None:
    """The phone photo of a garment the shop does not sell, if its best product is not a confident match."""
    img = load_image(NOT_SOLD, max_side=EXAMPLE_SIDE)
    best = engine.search(img, k=1, explain=False, products=True).matches[0]
    return img if (best.confidence or 0.0) < CONFIDENT else None


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
    phone = not_sold(engine)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for key, (r, img) in picked.items():
        name = re.sub(r"[^a-z0-9]+", "-", f"{key} {html.unescape(r['product_name']).lower()}").strip("-") + ".jpg"
        img.save(out / name, "JPEG", quality=90)
    if phone is not None:
        phone.save(out / NOT_SOLD_NAME, "JPEG", quality=90)
    shutil.copy(luma / "LICENSE-OSL-3.0.txt", out / "LICENSE-OSL-3.0.txt")
    record_results(engine, out)
    rate = f"{hits} of {len(queries)} query photos ({hits / len(queries):.0%}) find their product at #1"
    (out / "README.md").write_text(
        "Example queries for the app, chosen by `python -m index_builder.pick_examples` (its docstring states the "
        "rule): per category the first query photo of a demo-gallery product that the embedded default finds at #1 "
        "with a confident match. Query photos are never in the gallery. "
        f"Measured when chosen: {rate}. From luma-inshop (magento/magento2-sample-data), license OSL-3.0 "
        f"(LICENSE-OSL-3.0.txt). `{NOT_SOLD_NAME}` is a real phone photo of a garment the shop does not sell "
        "(a dress), from the clothing dataset small (distractors/validation), license CC0.\n")
    print(f"{rate}; {len(picked)} examples in {out}: {', '.join(picked)}"
          + (f", and {NOT_SOLD_NAME}" if phone is not None else "; the dress found a confident match: no phone photo"))


if __name__ == "__main__":
    main()
