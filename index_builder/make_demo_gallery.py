"""Re-create assets/demo-gallery from ../shared/data: a shop catalogue of downscaled copies of the product photos
of Luma's test items (their gallery split), with metadata and license. Phone photos and the test items' query
photos stay out: they are what shoppers send, for benchmarks and for the example queries
(`python -m index_builder.pick_examples`), never products in the catalogue.

    python -m index_builder.make_demo_gallery [--luma ../shared/data/luma-inshop]
"""
from __future__ import annotations

import argparse
import csv
import html
import shutil
from pathlib import Path

from PIL import Image

from mga.config import ASSETS_DIR, SHARED_DATA
from mga.imageio import load_image

SIDE, QUALITY = 320, 85
FIELDS = ["image_name", "item_id", "category", "product_name", "gender", "color", "view"]


def _save(src: Path, dst: Path, side: int) -> None:
    img = load_image(src)
    img.thumbnail((side, side), Image.BICUBIC)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, "JPEG", quality=QUALITY, optimize=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--luma", default=str(SHARED_DATA / "luma-inshop"))
    p.add_argument("--out", default=str(ASSETS_DIR / "demo-gallery"))
    args = p.parse_args(argv)
    luma, out = Path(args.luma), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = []
    with open(luma / "items.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["evaluation_status"] == "gallery":
                _save(luma / r["image_name"], out / r["image_name"], SIDE)
                rows.append({k: html.unescape(r.get(k, "")) for k in FIELDS})  # "LumaTech&trade;" -> "LumaTech™"
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    shutil.copy(luma / "LICENSE-OSL-3.0.txt", out / "LICENSE-OSL-3.0.txt")
    items = len({r["item_id"] for r in rows})
    (out / "README.md").write_text(f"""# Demo gallery: a small shop

Downscaled copies (longest side {SIDE} px, JPEG quality {QUALITY}) made by `python -m index_builder.make_demo_gallery`:
the {len(rows)} product photos (the gallery split) of the {items} **test** items of `luma-inshop` (Magento "Luma"
sample store photos, from `magento/magento2-sample-data` commit 53807565, grouped into products by configurable
parent SKU). License: OSL-3.0, see `LICENSE-OSL-3.0.txt`. `metadata.csv`: image_name, item_id, category, product
name, gender, colour, view.

The test items' query photos are not in it: a few of them are the app's example queries (`assets/examples`,
`python -m index_builder.pick_examples`). Rebuild the index after new weights:
`python -m index_builder --gallery assets/demo-gallery --out assets/demo-index`
""")
    print(f"{len(rows)} photos of {items} products in {out}")


if __name__ == "__main__":
    main()
