"""Consumer-style robustness: Luma test queries corrupted the way shoppers' photos are, against the clean gallery.

    python -m bench.robustness --data ../shared/data/luma-inshop [--weights DIR|HUB_ID] [--json out.json]

The corruptions are deliberately NOT the training augmentations (mga.transforms.ConsumerPhotoAugment): real
clutter from phone photos in ../shared/data/distractors behind the garment, perspective tilt, off-centre crops,
colour-temperature casts, low-quality JPEG and defocus blur, each seeded. Prints R@1 per corruption next to the
clean queries' R@1 (the baseline of the same run) and their ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageFilter

from mga.config import PROJECT_ROOT
from mga.hub import describe_weights, load_model
from mga.imageio import load_image
from mga.data import load_retrieval_data
from mga.evaluate import encode_gallery
from mga.metrics import recall_at_k
from mga.model import Encoding
from mga.retrieval import rank
from mga.views import ZoomViews

DISTRACTORS = PROJECT_ROOT.parent / "shared" / "data" / "distractors"


def on_clutter(img: Image.Image, rng: random.Random, backgrounds: list[Path]) -> Image.Image:
    """The garment (everything not studio-white) pasted onto a real phone photo."""
    bg = load_image(rng.choice(backgrounds)).resize(img.size, Image.BILINEAR)
    mask = Image.fromarray(((np.asarray(img.convert("L")) < 235) * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(5))
    return Image.composite(img, bg, mask)


def tilt(img: Image.Image, rng: random.Random) -> Image.Image:
    """A hand-held perspective: corners pulled in by up to 12 %."""
    w, h = img.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[x + rng.uniform(-0.12, 0.12) * w, y + rng.uniform(-0.12, 0.12) * h] for x, y in src])
    warped = cv2.warpPerspective(np.asarray(img), cv2.getPerspectiveTransform(src, dst), (w, h),
                                 borderValue=(255, 255, 255))
    return Image.fromarray(warped)


def crop(img: Image.Image, rng: random.Random) -> Image.Image:
    """An off-centre crop keeping 55-75 % of each side: a partial view of the garment."""
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.55, 0.75)), int(h * rng.uniform(0.55, 0.75))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def colour_cast(img: Image.Image, rng: random.Random) -> Image.Image:
    """Warm or cold white balance and a gamma shift, like indoor light."""
    arr = np.asarray(img, dtype=np.float32) / 255
    gains = np.array([1.25, 1.0, 0.75]) if rng.random() < 0.5 else np.array([0.8, 0.95, 1.25])
    arr = np.clip(arr * gains, 0, 1) ** rng.uniform(0.7, 1.4)
    return Image.fromarray((arr * 255).astype(np.uint8))


def jpeg(img: Image.Image, rng: random.Random) -> Image.Image:
    buf = io.BytesIO()
    img.resize((max(1, img.width // 3), max(1, img.height // 3))).save(buf, "JPEG", quality=rng.randint(10, 25))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def blur(img: Image.Image, rng: random.Random) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 4) * max(img.size) / 500))


def corruptions(backgrounds: list[Path]) -> dict[str, Callable[[Image.Image, random.Random], Image.Image]]:
    return {"clean": lambda im, rng: im, "clutter": lambda im, rng: on_clutter(im, rng, backgrounds),
            "tilt": tilt, "crop": crop, "colour cast": colour_cast, "jpeg": jpeg, "blur": blur}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights")
    p.add_argument("--distractors", default=str(DISTRACTORS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="gallery zoom views (0: off)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    backgrounds = sorted(Path(args.distractors).glob("*/*/*.jpg"))
    queries = [load_image(data.root / r.path) for r in data.query]
    for img in queries:
        img.thumbnail((640, 640))
    gallery, owner = encode_gallery(model, data.root, data.gallery, ZoomViews(grid=args.zoom_grid))
    q_items, g_items = [r.item_id for r in data.query], [r.item_id for r in data.gallery]
    results = {}
    for name, corrupt in corruptions(backgrounds).items():
        rng = random.Random(args.seed)
        q: Encoding = model.encode_images(corrupt(img, rng) for img in queries)
        order = rank(model, q, gallery, "coarse", 100, owner)[:, :10].numpy()
        results[name] = recall_at_k(order, q_items, g_items, (1, 10))
    clean = results["clean"]["R@1"]
    print(f"weights {describe_weights(args.weights)}; {len(queries)} queries, {len(data.gallery)} gallery "
          f"({len(gallery)} views, zoom grid {args.zoom_grid})")
    print(f"{'corruption':<12} {'R@1':>6} {'R@10':>6} {'R@1 / clean':>12}")
    for name, r in results.items():
        print(f"{name:<12} {r['R@1']:6.3f} {r['R@10']:6.3f} {r['R@1'] / max(clean, 1e-9):12.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
