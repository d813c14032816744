"""Re-create assets/demo-gallery (and assets/examples) from ../shared/data: downscaled copies of Luma's test items
(query + gallery split, In-shop layout) plus ~150 CC0 distractor photos, with metadata and licenses.

    python -m index_builder.make_demo_gallery [--luma ../shared/data/luma-inshop] [--distractors ../shared/data/distractors]

The demo gallery is itself an In-shop data set (Eval/list_eval_partition.txt): indexing it indexes the Luma
gallery split plus the distractors; `python -m mga.evaluate --data assets/demo-gallery` evaluates on it.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from PIL import Image

from mga.config import ASSETS_DIR, PROJECT_ROOT
from mga.imageio import load_image

SIDE, QUALITY = 320, 85
EXAMPLE_SIDE = 480
PER_CLASS = 15
FIELDS = ["image_name", "item_id", "category", "product_name", "gender", "color", "view", "evaluation_status", "source"]


def _save(src: Path, dst: Path, side: int) -> None:
    img = load_image(src)
    img.thumbnail((side, side), Image.BICUBIC)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, "JPEG", quality=QUALITY, optimize=True)


def main(argv=None) -> None:
    data = PROJECT_ROOT.parent / "shared" / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--luma", default=str(data / "luma-inshop"))
    p.add_argument("--distractors", default=str(data / "distractors"))
    p.add_argument("--out", default=str(ASSETS_DIR / "demo-gallery"))
    p.add_argument("--examples", default=str(ASSETS_DIR / "examples"))
    args = p.parse_args(argv)
    luma, dis, out, ex = Path(args.luma), Path(args.distractors), Path(args.out), Path(args.examples)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = []
    with open(luma / "items.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["evaluation_status"] in ("query", "gallery"):
                _save(luma / r["image_name"], out / r["image_name"], SIDE)
                rows.append({**{k: r.get(k, "") for k in FIELDS}, "source": "luma-inshop"})
    classes = sorted({d.name for split in ("test", "validation") for d in (dis / split).iterdir() if d.is_dir()})
    for cls in classes:
        files = sorted(q for split in ("test", "validation") for q in (dis / split / cls).glob("*.jpg"))
        step = max(1, len(files) // PER_CLASS)
        for src in files[::step][:PER_CLASS]:
            rel = f"distractors/{cls}/{src.name}"
            _save(src, out / rel, SIDE)
            rows.append({"image_name": rel, "item_id": f"distractor-{src.stem}", "category": cls,
                         "evaluation_status": "gallery", "source": "distractors (clothing-dataset-small)",
                         **{k: "" for k in ("product_name", "gender", "color", "view")}})
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    (out / "Eval").mkdir()
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{r['image_name']} {r['item_id']} {r['evaluation_status']}" for r in rows]
    (out / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(luma / "LICENSE-OSL-3.0.txt", out / "LICENSE-OSL-3.0.txt")
    shutil.copy(dis / "LICENSE-CC0-1.0.txt", out / "LICENSE-CC0-1.0.txt")
    n_luma = sum(r["source"] == "luma-inshop" for r in rows)
    n_q = sum(r["evaluation_status"] == "query" for r in rows)
    (out / "README.md").write_text(f"""# Demo gallery

Downscaled copies (longest side {SIDE} px, JPEG quality {QUALITY}) made by `python -m index_builder.make_demo_gallery`.

- `img/...`: all {n_luma} photos ({n_q} query split, {n_luma - n_q} gallery split) of the 72 **test** items of
  `luma-inshop` (Magento "Luma" sample store product photos, from `magento/magento2-sample-data` commit 53807565,
  grouped into items by configurable parent SKU). License: OSL-3.0, see `LICENSE-OSL-3.0.txt`.
- `distractors/<class>/...`: {len(rows) - n_luma} phone photos of single garments, {PER_CLASS} per class, from
  `alexeygrigorev/clothing-dataset-small` (commit 11961516), item id `distractor-<file stem>`. License: CC0-1.0,
  see `LICENSE-CC0-1.0.txt`.
- `metadata.csv`: image_name, item_id, category, product name, gender, colour, view, split, source.
- `Eval/list_eval_partition.txt`: the folder is an In-shop data set. Its gallery split (Luma gallery photos +
  distractors) is what `assets/demo-index` indexes; the Luma query photos are for evaluation
  (`python -m mga.evaluate --data assets/demo-gallery`) and a few of them, larger, are the app's example queries
  in `assets/examples/`.

Rebuild the index after new weights: `python -m index_builder --gallery assets/demo-gallery --out assets/demo-index`
""")
    # example queries: one query-split photo per category (then more), at a more phone-like size
    ex.mkdir(parents=True, exist_ok=True)
    for old in ex.glob("*.jpg"):
        old.unlink()
    queries = [r for r in rows if r["evaluation_status"] == "query"]
    picked, cats = [], []
    for r in queries:
        if r["category"] not in cats:
            cats.append(r["category"])
            picked.append(r)
    picked += [r for r in queries[::17] if r not in picked][: max(0, 8 - len(picked))]
    for r in picked[:8]:
        name = f"{r['category'].split(' ')[0].lower()}-{r['item_id']}-{Path(r['image_name']).stem}.jpg"
        _save(luma / r["image_name"], ex / name, EXAMPLE_SIDE)
    shutil.copy(luma / "LICENSE-OSL-3.0.txt", ex / "LICENSE-OSL-3.0.txt")
    (ex / "README.md").write_text("Example queries for the app: Luma **query-split** photos (longest side "
                                  f"{EXAMPLE_SIDE} px) of test items whose gallery photos are in assets/demo-index. "
                                  "From luma-inshop (magento/magento2-sample-data), license OSL-3.0 "
                                  "(LICENSE-OSL-3.0.txt). Made by `python -m index_builder.make_demo_gallery`.\n")
    print(f"{len(rows)} images in {out}, {min(8, len(picked))} examples in {ex}")


if __name__ == "__main__":
    main()
