"""Heat on skin: how much of a match's heatmap, and of each part, lies on skin in the query photo, and how often the
detail named as what stood out was skin.

    python -m bench.skin --data ../shared/data/luma-inshop [--index assets/demo-index] [--json out.json]

The test split's query photos are searched as the app searches them; for each #1 the query side of its whole-score
map (mga.explain) and each part's attention are measured against the photo's skin pixels (mga.colour.skin_mask,
on the letterbox the model sees). The baseline is skin's share of what is not background in the photo. The named
detail is ui.details.what_decided's, without the skin rule (before) and with it (now).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.colour import photo_colours, query_paths, test_split_parser
from mga.colour import photo_pixels, skin_mask, upsample
from mga.confidence import likely
from mga.explain import WHOLE
from mga.garments import FIGURE
from mga.imageio import load_photo
from mga.search import SearchEngine
from ui.details import what_decided


def measure(engine: SearchEngine, photos: Sequence) -> dict:
    heat, figure, parts, named_before, named_now, on_skin_before = [], [], [], 0, 0, 0
    for img in photos:
        res = engine.search(img, k=1, products=True)
        if not res.matches:
            continue
        m = res.matches[0]
        lab, weights = photo_pixels(img)
        skin = skin_mask(lab)
        hot = upsample(np.clip(engine.query_maps(res, m).term(WHOLE), 0, None), len(lab))
        heat.append(float((hot * skin).sum() / max(hot.sum(), 1e-12)))
        not_background = weights > FIGURE
        figure.append(float(skin[not_background].mean()) if not_background.any() else 0.0)
        parts.append(res.parts_on_skin)
        sure = likely(m.confidence)
        before, now = what_decided(m, sure), what_decided(m, sure, res.parts_on_skin)
        named_before += "**" in before
        named_now += "**" in now
        on_skin_before += "**" in before and "**" not in now
    n = len(heat)
    return {"queries": n, "heat_on_skin_mean": float(np.mean(heat)),
            "skin_share_of_figure_mean": float(np.mean(figure)),
            "part_on_skin_mean": [round(float(x), 3) for x in np.mean(parts, axis=0)],
            "parts_mostly_on_skin": float(np.mean(np.asarray(parts) >= 0.5)),
            "detail_named_before": named_before / n, "detail_named_on_skin_before": on_skin_before / n,
            "detail_named_now": named_now / n}


def main(argv: Sequence[str] | None = None) -> dict:
    p = test_split_parser("python -m bench.skin", __doc__)
    args = p.parse_args(argv)
    data = Path(args.data)
    queries = query_paths(photo_colours(data))
    engine = SearchEngine.load(args.index, weights=args.weights)
    r = measure(engine, [load_photo(data / q) for q in queries])
    print(f"{r['queries']} query photos and their #1: {r['heat_on_skin_mean']:.3f} of the whole-score heat on skin "
          f"(skin is {r['skin_share_of_figure_mean']:.3f} of what is not background); each part's share on skin, "
          f"mean {r['part_on_skin_mean']}; parts mostly on skin: {r['parts_mostly_on_skin']:.3f}")
    print(f"a detail named: {r['detail_named_before']:.3f} of the queries before the skin rule, of which on skin "
          f"{r['detail_named_on_skin_before']:.3f}; now {r['detail_named_now']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return r


if __name__ == "__main__":
    main()
