"""Real phone photos against the shop: how often the top matches are the photo's own kind of garment.

    python -m bench.phone_photos --data ../shared/data/luma-inshop [--weights DIR|HUB_ID ...] [--side validation]
                                 [--json out.json]

bench.robustness corrupts studio photos; these are real shoppers' photos (../shared/data/distractors/test, never
seen in training), of garments the shop does not sell, so no product can be found, but its kind of garment can:
each kind maps to the shop categories that count as the same kind (training.kinds.KINDS; kinds the shop does not
sell, such as shoes or dresses, are left out). Each photo is searched the app's way (coarse + ATA over the test
gallery's zoom views; full photos with --zoom-grid 0) and scored by whether its #1 is of an accepted category
(P@1) and by the share of its top 20 that are (P@20); the untrained backbone (GeM of its last map, full photos,
cosine) is measured in the same run. A model that has forgotten what the backbone knew about garments falls below
it here.

`--side validation` is where a search setting may be chosen: the phone photos of distractors/validation against
the training split's photos as the shop (how well it predicts the test side: docs/experiments.md). The embedded
default's phone-photo half trained on these photos (training.kinds), so they flatter a model that used them: compare
settings of one model there, not models.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.variants import add_variant_arguments, variants
from mga.config import SIDE_DISTRACTORS
from mga.data import category_of, load_retrieval_data
from training.distill import PretrainedGeM
from training.evaluate import Shop
from mga.hub import describe_weights, load_model
from mga.imageio import load_image, load_photo
from training.kinds import KINDS, kind_photos
from mga.views import ZoomViews

TOP = 20


def kind_scores(order: np.ndarray, kinds: Sequence[str], gallery_categories: Sequence[str]) -> dict[str, dict]:
    """P@1 and P@20 (share of the top 20 of an accepted category), per kind and over all photos."""
    hits = np.array([[gallery_categories[j] in KINDS[kind] for j in row[:TOP]] for row, kind in zip(order, kinds)])
    return _per_kind(hits, kinds)


def chance_scores(kinds: Sequence[str], gallery_categories: Sequence[str]) -> dict[str, dict]:
    """What a random ranking scores: each photo's share of gallery photos of an accepted category."""
    share = np.array([[np.mean([c in KINDS[kind] for c in gallery_categories])] * TOP for kind in kinds])
    return _per_kind(share, kinds)


def _per_kind(hits: np.ndarray, kinds: Sequence[str]) -> dict[str, dict]:
    groups = {"all": np.ones(len(kinds), bool), **{k: np.array(kinds) == k for k in KINDS}}
    return {name: {"P@1": float(hits[m, 0].mean()), f"P@{TOP}": float(hits[m].mean()), "photos": int(m.sum())}
            for name, m in groups.items() if m.any()}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.phone_photos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="the shop: a Luma-style data root (its gallery side is searched; its training side with "
                        "--side validation)")
    p.add_argument("--weights", nargs="*", default=[None],
                   help="one or more checkpoint folders / Hub ids (default: the embedded default)")
    p.add_argument("--side", choices=tuple(SIDE_DISTRACTORS), default="test",
                   help="test: distractors/test against the gallery (measuring only); validation: "
                        "distractors/validation against the training photos (where settings may be chosen)")
    p.add_argument("--photos", help="phone photos, one folder per kind of garment (default: the side's)")
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="gallery zoom views (0: off)")
    add_variant_arguments(p)
    p.add_argument("--json")
    args = p.parse_args(argv)
    data = load_retrieval_data(args.data)
    shop = data.gallery if args.side == "test" else data.train
    args.photos = args.photos or str(SIDE_DISTRACTORS[args.side])
    paths = kind_photos(args.photos)
    if not paths:
        raise SystemExit(f"{args.photos}: no phone photos in any of the folders {', '.join(KINDS)}")
    photos, kinds = [load_photo(path) for path, _ in paths], [kind for _, kind in paths]
    categories = [category_of(r.path) for r in shop]
    models = [(describe_weights(w), load_model(w)) for w in args.weights]
    baseline = PretrainedGeM(models[0][1])
    gallery = baseline.encode([load_image(data.root / r.path) for r in shop])
    results = {"chance (a random ranking)": chance_scores(kinds, categories),
               "untrained backbone (GeM)": kind_scores(baseline.ranking(photos, gallery, TOP), kinds, categories)}
    for label, model in models:
        q = model.encode_images(photos)
        with Shop.indexed(model, data.root, shop, ZoomViews(grid=args.zoom_grid)) as indexed:
            for row, (chosen, vote) in variants(label, args.views, args.category_vote).items():
                order, _ = indexed.rank(q, TOP, views=chosen, vote=vote)
                results[row] = kind_scores(order, kinds, indexed.categories)
    print(f"{len(photos)} phone photos of {Path(args.photos).name}/ against {len(shop)} {args.side} shop photos; "
          f"P@1 / P@{TOP}: the #1 / the top {TOP} of the photo's kind of garment")
    names = list(results["chance (a random ranking)"])
    width = max(len(label) for label in results) + 2
    print(f"{'':<{width}}" + "".join(f"{n:>16}" for n in names))
    for label, rows in results.items():
        print(f"{label:<{width}}" + "".join(f"{rows[n]['P@1']:>8.3f}{rows[n][f'P@{TOP}']:>8.3f}" for n in names))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
