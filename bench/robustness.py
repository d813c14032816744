"""Consumer-style robustness: Luma test queries corrupted the way shoppers' photos are, against the clean gallery.

    python -m bench.robustness --data ../shared/data/luma-inshop [--weights DIR|HUB_ID ...] [--side validation]
                               [--json out.json]

The corruptions are deliberately NOT the training augmentations (training.augment.ConsumerPhotoAugment): real
clutter from the phone photos of ../shared/data/distractors/test (never a training background: training may only
use distractors/validation) behind the garment, perspective tilt, off-centre crops, colour-temperature casts,
low-quality JPEG and defocus blur, each seeded; "all at once" applies every one to the same photo, as a real
shopper's photo has them. Each set of weights is ranked the app's way (coarse + ATA over the gallery's views);
the untrained backbone (GeM of its last map, full photos, cosine) is measured in the same run as the baseline.

`--side validation` asks the same of the training side (mga.data.training_halves: half of each training item's
photos are the shop, the other half the queries, clutter from distractors/validation): where a search setting may
be chosen, and how well a model reads spoilt photos of products it has trained on.
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

from bench.variants import add_variant_arguments, variants
from mga.backbones import BACKBONES
from mga.config import SIDE_DISTRACTORS
from mga.data import load_retrieval_data
from training.batches import training_halves
from training.distill import PretrainedGeM
from training.evaluate import Shop
from mga.files import atomic_path
from mga.hub import describe_weights, load_model
from mga.imageio import load_image, load_photo
from training.metrics import recall_at_k
from mga.views import ZoomViews

Corruption = Callable[[Image.Image, random.Random], Image.Image]


def on_clutter(img: Image.Image, rng: random.Random, backgrounds: list[Path]) -> Image.Image:
    """The garment (everything not studio-white) pasted onto a real phone photo."""
    bg = load_image(rng.choice(backgrounds)).resize(img.size, Image.BILINEAR)
    mask = Image.fromarray(((np.asarray(img.convert("L")) < 235) * 255).astype(np.uint8))
    mask = mask.filter(ImageFilter.MedianFilter(5))
    return Image.composite(img, bg, mask)


def tilt(img: Image.Image, rng: random.Random) -> Image.Image:
    """A hand-held perspective: corners pulled in by up to 12 %."""
    w, h = img.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[x + rng.uniform(-0.12, 0.12) * w, y + rng.uniform(-0.12, 0.12) * h] for x, y in src])
    warped = cv2.warpPerspective(np.asarray(img), cv2.getPerspectiveTransform(src, dst), (w, h),
                                 borderMode=cv2.BORDER_REPLICATE)
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


SHOPPER_ORDER = ("clutter", "crop", "tilt", "colour cast", "blur", "jpeg")  # the order a photo gets them
GEOMETRY = ("crop", "tilt")  # what framing does; the rest is what the camera and the room do
TWIN = "all at once, clean twin"


def corruptions(backgrounds: list[Path], all_but: bool = False, twin: bool = False) -> dict[str, Corruption]:
    """Each corruption alone, then all of them on the same photo; with `all_but`, also all but one of them
    (which corruption the "all at once" column loses most to); with `twin`, also each "all at once" photo's
    clean twin: its crop and tilt on studio white, sharp, true colour, full size."""
    clutter: Corruption = lambda im, rng: on_clutter(im, rng, backgrounds)  # noqa: E731
    single = {"clutter": clutter, "tilt": tilt, "crop": crop, "colour cast": colour_cast, "jpeg": jpeg, "blur": blur}

    def chain(names: Sequence[str], geometry_only: bool = False) -> Corruption:
        def apply(im: Image.Image, rng: random.Random) -> Image.Image:
            clean = im
            for name in names:
                if name in GEOMETRY:  # the twin takes the spoilt photo's draws, so it has the same framing
                    state = rng.getstate()
                    clean = single[name](clean, rng)
                    rng.setstate(state)
                im = single[name](im, rng)
            return clean if geometry_only else im
        return apply

    leave_one_out = {f"all but {n}": chain([m for m in SHOPPER_ORDER if m != n]) for n in SHOPPER_ORDER}
    return {"clean": lambda im, rng: im, **single, "all at once": chain(SHOPPER_ORDER),
            **({TWIN: chain(SHOPPER_ORDER, geometry_only=True)} if twin else {}),
            **(leave_one_out if all_but else {})}


def clutter_backgrounds(folder: str | Path) -> list[Path]:
    """The phone photos the clutter corruption pastes garments onto, in a fixed order (the draws depend on it)."""
    backgrounds = sorted(Path(folder).rglob("*.jpg"))
    if not backgrounds:
        raise SystemExit(f"{folder}: no .jpg backgrounds for the clutter corruption")
    return backgrounds


def corrupt_all(photos: list[Image.Image], backgrounds: list[Path], seed: int = 0,
                all_but: bool = False, twin: bool = False) -> dict[str, list[Image.Image]]:
    """Every column's copy of `photos`; each column draws from its own generator seeded `seed`, so a column's
    photos do not depend on which columns come before it."""
    out = {}
    for name, corrupt in corruptions(backgrounds, all_but, twin).items():
        rng = random.Random(seed)
        out[name] = [corrupt(img, rng) for img in photos]
    return out


def plot_examples(corrupted: dict[str, list[Image.Image]], path: str | Path, photos: int = 6) -> None:
    """A grid: one row per column of the bench, the same first `photos` queries in each, each scaled to its cell
    as the model scales it to its input (a 1/3-size JPEG comes out soft and blocky): what R@1 is measured on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(corrupted), photos, figsize=(1.2 * photos, 1.45 * len(corrupted)), dpi=110,
                             squeeze=False)
    for r, (name, images) in enumerate(corrupted.items()):
        axes[r, 0].set_ylabel(name, fontsize=7)
        for c, img in enumerate(images[:photos]):
            axes[r, c].imshow(img, interpolation="bicubic")
            axes[r, c].set_xlabel(f"{img.width}x{img.height}", fontsize=5, labelpad=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    fig.suptitle("bench.robustness: the same queries in each column (size in pixels below each)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", nargs="*", default=[None],
                   help="one or more checkpoint folders / Hub ids (default: the embedded default)")
    p.add_argument("--side", choices=tuple(SIDE_DISTRACTORS), default="test",
                   help="test: the test queries against the gallery (measuring only); validation: half of each "
                        "training item's photos against the other half (where settings may be chosen)")
    p.add_argument("--distractors", help="backgrounds for the clutter corruption (default: the side's, "
                                         "distractors/test or distractors/validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="gallery zoom views (0: off)")
    add_variant_arguments(p)
    p.add_argument("--all-but", action="store_true",
                   help="also every corruption but one on the same photo (what 'all at once' loses most to)")
    p.add_argument("--twin", action="store_true",
                   help="also each 'all at once' photo's clean twin (its crop and tilt only): what framing alone costs")
    p.add_argument("--backbones", nargs="*", default=[], choices=list(BACKBONES),
                   help="also these pretrained backbones untrained (GeM of a CNN's last map, a ViT's CLS token), at "
                        "the model's input side: which backbone starts closest to shoppers' photos")
    p.add_argument("--json")
    p.add_argument("--examples", help="also save a PNG of the first queries as each column corrupts them")
    args = p.parse_args(argv)
    data = load_retrieval_data(args.data)
    query_records, gallery_records = (data.query, data.gallery) if args.side == "test" else training_halves(data.train)
    args.distractors = args.distractors or str(SIDE_DISTRACTORS[args.side])
    backgrounds = clutter_backgrounds(args.distractors)
    queries = [load_photo(data.root / r.path) for r in query_records]
    corrupted = corrupt_all(queries, backgrounds, args.seed, args.all_but, args.twin)
    if args.examples:
        plot_examples(corrupted, args.examples)
    q_items, g_items = [r.item_id for r in query_records], [r.item_id for r in gallery_records]
    results: dict[str, dict[str, dict[str, float]]] = {}
    models = [(describe_weights(w), load_model(w)) for w in args.weights]
    gallery_photos = [load_image(data.root / r.path) for r in gallery_records]
    untrained = {"untrained backbone (GeM)": None, **{f"untrained {name}": name for name in args.backbones}}
    for row, name in untrained.items():  # the model's own backbone first: the baseline of every ratio
        descriptor = PretrainedGeM(models[0][1], backbone=name)
        gallery = descriptor.encode(gallery_photos)
        results[row] = {column: recall_at_k(descriptor.ranking(qs, gallery), q_items, g_items, (1, 10))
                        for column, qs in corrupted.items()}
    for label, model in models:
        rows = variants(label, args.views, args.category_vote)
        for row in rows:
            results[row] = {}
        with Shop.indexed(model, data.root, gallery_records, ZoomViews(grid=args.zoom_grid)) as shop:
            for name, qs in corrupted.items():
                q = model.encode_images(qs)
                for row, (chosen, vote) in rows.items():
                    order, _ = shop.rank(q, 10, views=chosen, vote=vote)
                    results[row][name] = recall_at_k(order, q_items, shop.item_ids, (1, 10))
    print(f"{args.side} side: {len(queries)} queries, {len(gallery_records)} gallery photos; models ranked coarse + "
          f"ATA over zoom grid {args.zoom_grid} (views {', '.join(args.views)}); clutter from "
          f"{len(backgrounds)} photos of {Path(args.distractors).name}/")
    widths = {n: max(13, len(n) + 2) for n in corrupted}
    print("R@1" + "".join(f"{n:>{w}}" for n, w in widths.items()))
    for label, rows in results.items():
        print(label)
        print("   " + "".join(f"{rows[n]['R@1']:{w}.3f}" for n, w in widths.items()))
    base = results["untrained backbone (GeM)"]
    for label in list(results)[1:]:
        print(f"ratio {label} / untrained backbone")
        ratios = {n: results[label][n]["R@1"] / max(base[n]["R@1"], 1e-9) for n in widths}
        print("   " + "".join(f"{ratios[n]:{w}.2f}" for n, w in widths.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
