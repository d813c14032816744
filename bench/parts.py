"""Where the parts land on photos the model was not trained on, and whether their names hold there.

    python -m bench.parts --data ../shared/data/luma-inshop [--weights DIR|HUB_ID] [--plot docs/parts.png] [--clutter]

On the test split (query and gallery photos), per part: its attention mass on the figure (the non-white pixels;
a uniform map scores the figure's share of the frame), its mass at the sides of long-sleeved tops (the outer
quarters of the figure box, where sleeves and cuffs hang), its effective area (share of the token grid), and the
spread of its centroid in figure-box coordinates (of the map folded about the figure's axis, so that both cuffs
are one place) across the photos of one category and view (root mean squared
distance from their mean, averaged over (category, view) groups of 3 or more photos). Then, for every query
against its #1 match (the model's own ranking): which part contributes most, and whether that part's centroid on
the query lies in the region its name says. `--clutter` measures the parts again on the same photos pasted
onto real phone photos (the figure still read off the clean photo): whether they stay on the garment when the
background is no longer white. `--plot` draws each part's mean map per category over the
category's template garment (the mean of its photos in figure-box coordinates), the README's picture.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.robustness import clutter_backgrounds, on_clutter
from mga.config import TEST_DISTRACTORS
from mga.data import category_key, category_of, load_retrieval_data
from training.evaluate import Shop, encode_records
from mga.files import atomic_path
from mga.hub import describe_weights, load_model
from mga.views import ZoomViews
from mga.part_names import KIND_KEY, names_for
from training.landmarks import ANCHORS, landmark_of, landmark_set, region_name
from training.parts import part_geometry

TARGET_MASS, TARGET_SPREAD, TARGET_SIDES = 0.90, 0.10, 0.5


def view_of(path: str) -> str:
    """In-shop file names end in the view: 01_1_front.jpg -> front."""
    return Path(path).stem.rsplit("_", 1)[-1]


def centroid_spread(positions: np.ndarray, groups: Sequence[str], min_size: int = 3) -> np.ndarray:
    """(K,) RMS distance of each part's centroid from its group's mean, averaged over groups (photo-weighted)."""
    groups = np.asarray(groups)
    total, count = np.zeros(positions.shape[1]), 0
    for g in set(groups):
        p = positions[groups == g]
        if len(p) < min_size:
            continue
        total += ((p - p.mean(0)) ** 2).sum(-1).sum(0)
        count += len(p)
    return np.sqrt(total / max(count, 1))


def report_geometry(geo: dict[str, np.ndarray], groups: Sequence[str], on: dict[str, Sequence[str]]) -> dict:
    """Print each part's mass on the figure, its mass at the sides of long-sleeved tops (the outer quarters of
    the figure box), effective area and centroid spread (of maps folded about the figure's axis) against the
    targets."""
    mass, area = geo["mass"].mean(0), geo["area"].mean(0)
    long_sleeves = np.array([landmark_set(g.split("/")[0]) == "top" for g in groups])  # not tees, tanks
    sides = geo["sides"][long_sleeves].mean(0) if long_sleeves.any() else np.zeros_like(mass)
    spread = centroid_spread(geo["position"], groups)
    w = max(len(n) for names in on.values() for n in names) + 2
    print(f"{'part':<6}{'on tops':<{w}}{'on bottoms':<{w}}{'mass on figure':>15}{'at sides':>10}{'area':>8}"
          f"{'centroid spread':>17}")
    for i in range(len(mass)):
        print(f"{i + 1:<6}{on['top'][i]:<{w}}{on['bottom'][i]:<{w}}{mass[i]:15.3f}{sides[i]:10.3f}{area[i]:8.3f}"
              f"{spread[i]:17.3f}")
    print(f"{'mean':<{6 + 2 * w}}{mass.mean():15.3f}{sides.mean():10.3f}{area.mean():8.3f}{spread.mean():17.3f}")
    sleeve = [i for i, n in enumerate(on["top"]) if landmark_of(n) == "sleeve / cuff"]
    best = max((float(sides[i]) for i in sleeve), default=0.0)
    print(f"targets: every part's mass >= {TARGET_MASS} ({'met' if mass.min() >= TARGET_MASS else 'NOT met'}), "
          f"every spread <= {TARGET_SPREAD} ({'met' if spread.max() <= TARGET_SPREAD else 'NOT met'}), "
          f"a sleeve / cuff part with >= {TARGET_SIDES} of its mass at the sides of {long_sleeves.sum()} "
          f"long-sleeved tops ({'met' if best >= TARGET_SIDES else 'NOT met'}: {best:.3f})")
    return {"mass_on_figure": mass.tolist(), "sides_of_long_sleeves": sides.tolist(), "effective_area": area.tolist(),
            "centroid_spread": spread.tolist(), "sleeve_sides": best}


def strongest_parts(model, data) -> list[dict]:
    """Each query's #1 match as the app ranks it (among full gallery photos) and the part that contributed most."""
    q = encode_records(model, data.root, data.query, desc="queries")
    with Shop.indexed(model, data.root, data.gallery, ZoomViews(grid=0)) as shop:
        tops = [shop.engine.search_encoding(q[i:i + 1], k=1).matches[0] for i in range(len(q))]
    return [{"query": r.path, "match_category": m.category, "strongest": int(np.argmax(m.contributions))}
            for r, m in zip(data.query, tops)]


def plot_mean_maps(geometry: dict[str, np.ndarray], categories: Sequence[str], names: dict, path: str | Path) -> None:
    """A grid: one row per category, its template garment and each part's mean map over it, named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted(set(categories))
    k = geometry["maps"].shape[1]
    fig, axes = plt.subplots(len(cats), k + 1, figsize=(1.45 * (k + 1), 1.9 * len(cats)), dpi=110, squeeze=False)
    for r, cat in enumerate(cats):
        sel = np.array([c == cat for c in categories])
        template = geometry["images"][sel].mean(0) / 255
        part_names = names_for(names, cat, k)
        axes[r, 0].imshow(template)
        axes[r, 0].set_title(f"{cat}\n({sel.sum()} photos)", fontsize=7)
        for p in range(k):
            m = geometry["maps"][sel, p].mean(0)
            ax = axes[r, p + 1]
            ax.imshow(template.mean(-1), cmap="gray", vmin=0, vmax=1)
            ax.imshow(m / max(m.max(), 1e-9), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.set_title(part_names[p], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Mean part maps per category, in figure-box coordinates (test photos)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.parts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="In-shop data set; its query and gallery photos are measured")
    p.add_argument("--weights", help="checkpoint folder or Hub id (default: the embedded default)")
    p.add_argument("--plot", help="write the mean-map grid (PNG) here")
    p.add_argument("--clutter", nargs="?", const=str(TEST_DISTRACTORS), metavar="DIR",
                   help="also measure the parts on the same photos pasted onto real phone photos of DIR (default: "
                        "distractors/test, never a training background), the figure read off the clean photo")
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    records = data.query + data.gallery
    categories = [category_of(r.path) for r in records]
    groups = [f"{category_key(c)}/{view_of(r.path)}" for c, r in zip(categories, records)]
    names = model.config.part_names
    geo = part_geometry(model, data.root, records)
    k = geo["mass"].shape[1]
    print(f"weights {describe_weights(args.weights)}; {len(records)} test photos ({data.root.name}), {k} parts")
    on = {kind: names.get(KIND_KEY.format(kind)) or names_for(None, None, k) for kind in ("top", "bottom")}
    result = report_geometry(geo, groups, on)
    if args.clutter:
        backgrounds = clutter_backgrounds(args.clutter)
        cluttered = part_geometry(model, data.root, records,
                                  backdrop=lambda img, rng: on_clutter(img, rng, backgrounds))
        print(f"the same photos pasted onto {len(backgrounds)} phone photos of {Path(args.clutter).name}/ "
              "(the figure read off the clean photo; its centroid spread in the clean photo's figure box):")
        result["clutter"] = report_geometry(cluttered, groups, on)

    rows = strongest_parts(model, data)
    position = {r.path: i for i, r in enumerate(records)}
    fits = 0
    for row in rows:
        cat, part = row["match_category"], row["strongest"]
        row["name"] = names_for(names, cat, k)[part]
        x, y = geo["position"][position[row["query"]], part]
        kind = landmark_set(cat)
        fits += kind in ANCHORS and landmark_of(row["name"]) == region_name(kind, float(x), float(y))
    counts = Counter(r["name"] for r in rows)
    print(f"strongest part of each query's #1 match ({len(rows)} queries): "
          + ", ".join(f"{n} {c}" for n, c in counts.most_common()))
    print(f"the strongest part lies, on the query, in the region its name says: {fits}/{len(rows)} "
          f"({fits / max(len(rows), 1):.2f})")
    result.update(part_names=names, strongest=dict(counts), name_fits=fits / max(len(rows), 1))
    if args.plot:
        plot_mean_maps(geo, categories, names, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
