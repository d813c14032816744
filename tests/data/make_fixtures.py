"""Rebuild the in-repo test fixtures from the shared data (../shared/data beside the repository):

    python tests/data/make_fixtures.py

luma-inshop-mini: a few Luma-tiny items, their photos copied as they are (<= 96 px), with their own partition file
and items.csv rows; luma-448: a few full-size Luma photos downscaled to 448 px; phones-mini: a few phone photos
of distractors (validation and test, by kind) downscaled to 160 px. Each folder gets its source's licence.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
TINY, LUMA, DISTRACTORS = SHARED / "luma-inshop-tiny", SHARED / "luma-inshop", SHARED / "distractors"

# one training item of most sections; test items of every section, three tees (an eye-sheet section), at least 24
# gallery photos
TRAIN = ["id_00000001", "id_00000014", "id_00000025", "id_00000037", "id_00000053", "id_00000061", "id_00000073",
         "id_00000111", "id_00000124", "id_00000136"]
TEST = ["id_00000002", "id_00000015", "id_00000026", "id_00000038", "id_00000054", "id_00000062", "id_00000064",
        "id_00000066", "id_00000074", "id_00000092", "id_00000100"]
# the photos conftest.luma_photos picked from the full-size set (every 97th), and a bra (tests/test_model.py)
PHOTOS_448 = ["img/MEN/Hoodies_Sweatshirts/id_00000001/01_1_front.jpg", "img/MEN/Jackets/id_00000020/02_2_back.jpg",
              "img/MEN/Shorts/id_00000041/03_1_additional.jpg", "img/MEN/Tees/id_00000067/01_1_front.jpg",
              "img/WOMEN/Hoodies_Sweatshirts/id_00000088/01_1_additional.jpg",
              "img/WOMEN/Jackets/id_00000107/03_3_front.jpg", "img/WOMEN/Bras_Tanks/id_00000074/01_3_front.jpg"]
# phone photos: two of each kind the shop sells and of one it does not (shoes) on the training side, two of two kinds
# on the test side
PHONES = {"validation": ["t-shirt", "longsleeve", "outwear", "pants", "shorts", "shoes"], "test": ["pants", "t-shirt"]}


def downscale(src: Path, dst: Path, side: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side), Image.LANCZOS)
        im.save(dst, "JPEG", quality=85)


def luma_mini(out: Path) -> None:
    lines = (TINY / "Eval" / "list_eval_partition.txt").read_text().splitlines()
    keep = set(TRAIN) | set(TEST)
    rows = [line for line in lines[2:] if line.split()[1] in keep]
    (out / "Eval").mkdir(parents=True)
    (out / "Eval" / "list_eval_partition.txt").write_text("\n".join([str(len(rows)), lines[1], *rows]) + "\n")
    for row in rows:
        rel = row.split()[0]
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TINY / rel, out / rel)
    with open(TINY / "items.csv", newline="") as f:
        reader = csv.DictReader(f)
        items = [r for r in reader if r["item_id"] in keep]
        fields = reader.fieldnames
    with open(out / "items.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
    shutil.copy(TINY / "LICENSE-OSL-3.0.txt", out)


def luma_448(out: Path) -> None:
    for rel in PHOTOS_448:
        downscale(LUMA / rel, out / rel, 448)
    shutil.copy(LUMA / "LICENSE-OSL-3.0.txt", out)


def phones_mini(out: Path) -> None:
    for split, kinds in PHONES.items():
        for kind in kinds:
            for src in sorted((DISTRACTORS / split / kind).glob("*.jpg"))[:2]:
                downscale(src, out / split / kind / src.name, 160)
    shutil.copy(DISTRACTORS / "LICENSE-CC0-1.0.txt", out)


if __name__ == "__main__":
    for name, make in (("luma-inshop-mini", luma_mini), ("luma-448", luma_448), ("phones-mini", phones_mini)):
        shutil.rmtree(HERE / name, ignore_errors=True)
        make(HERE / name)
        files = [p for p in (HERE / name).rglob("*") if p.is_file()]
        print(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e3:.0f} kB")
