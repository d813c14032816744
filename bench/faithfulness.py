"""Does a heatmap show what drove the match? Deletion and insertion tests over the test queries.

    python -m bench.faithfulness --data ../shared/data/luma-inshop [--index DIR] [--weights DIR|HUB_ID]
                                 [--queries N] [--json out.json] [--plot docs/faithfulness.png]

Each test query is searched as the app searches it (products, the category vote) and explained against its #1
product. Its heatmap on the query ranks the photo's pixels. For p = 5, 10, 20, 30 % of the photo's pixels:
- deletion: grey out the hottest p % of the photo, encode it again and score it against the same gallery view;
  the score's drop, against two baselines of the same area: the coldest p % of the figure (the non-white pixels),
  and random 16x16-pixel blocks on the figure;
- insertion: the photo all grey but those same pixels; the score's gain over the all-grey photo.
A third baseline has the maps' own grain: the hottest p % of a random map on the token grid, upsampled as the maps
are (a random region of the same kind). Rows: the map of the parts' terms alone, and the map of the whole score
(mga.explain). A faithful map costs the score far more when its hottest region goes than when the coldest figure
region, random blocks or a random region go. Each ratio is of the mean changes averaged over p; the mean of the
per-p ratios is printed too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mga.config import DEFAULT_INDEX_DIR
from mga.data import load_retrieval_data
from mga.explain import WHOLE, to_image_frame
from mga.files import atomic_path
from mga.imageio import load_image
from mga.search import SearchEngine
from mga.transforms import garment_mask, working_side

FRACTIONS = (0.05, 0.10, 0.20, 0.30)
MAPS = {"parts only": lambda maps: maps.parts.sum(0), "whole score": lambda maps: maps.term(WHOLE)}
GREY = 128
BLOCK = 16


def pixel_sets(heat: np.ndarray, figure: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the hottest `n` pixels of the photo and of the coldest `n` of the figure (all of it when
    it holds fewer)."""
    order = np.argsort(-heat, axis=None, kind="stable")
    on_figure = np.flatnonzero(figure.ravel())
    cold = on_figure[np.argsort(heat.ravel()[on_figure], kind="stable")][:n]
    return order[:n], cold


def reachable(figure: np.ndarray) -> np.ndarray:
    """The pixels some BLOCK x BLOCK square centred on a figure pixel covers (as random_blocks places them)."""
    h, w = figure.shape
    sums = np.pad(np.cumsum(np.cumsum(figure.astype(np.int64), 0), 1), ((1, 0), (1, 0)))
    ys, xs = np.arange(h), np.arange(w)  # a square at (y, x) covers rows y - BLOCK // 2 .. y + BLOCK // 2 - 1
    y0, y1 = np.clip(ys - BLOCK // 2 + 1, 0, h), np.clip(ys + BLOCK // 2 + 1, 0, h)
    x0, x1 = np.clip(xs - BLOCK // 2 + 1, 0, w), np.clip(xs + BLOCK // 2 + 1, 0, w)
    count = sums[y1][:, x1] - sums[y0][:, x1] - sums[y1][:, x0] + sums[y0][:, x0]
    return count > 0


def random_blocks(figure: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of random BLOCK x BLOCK squares centred on figure pixels, until they cover `n` pixels."""
    h, w = figure.shape
    centres = np.flatnonzero(figure.ravel())
    if len(centres) == 0:
        centres = np.arange(h * w)
    reach = reachable(figure if figure.any() else np.ones_like(figure))
    if n >= reach.sum():  # a small figure: its blocks together cover less than n, and would be drawn for ever
        return np.flatnonzero(reach.ravel())
    covered = np.zeros((h, w), dtype=bool)
    while covered.sum() < n:
        y, x = divmod(int(rng.choice(centres)), w)
        covered[max(0, y - BLOCK // 2):y + BLOCK // 2, max(0, x - BLOCK // 2):x + BLOCK // 2] = True
    return np.flatnonzero(covered.ravel())[:max(n, 1)] if covered.sum() > n else np.flatnonzero(covered.ravel())


def with_pixels(photo: np.ndarray, keep: np.ndarray | None, grey: np.ndarray | None) -> Image.Image:
    """The photo with the pixels `grey` greyed out, or all grey but the pixels `keep`."""
    out = photo.reshape(-1, 3).copy()
    if grey is not None:
        out[grey] = GREY
    else:
        kept = out[keep].copy()
        out[:] = GREY
        out[keep] = kept
    return Image.fromarray(out.reshape(photo.shape))


def one_query(engine: SearchEngine, img: Image.Image, rng: np.random.Generator) -> dict | None:
    """The drops (deletion) and gains (insertion) of one query against its #1 product, per map, method and p."""
    res = engine.search(img, k=1, products=True)
    if not res.matches:
        return None
    m = res.matches[0]
    size = engine.model.config.image_size
    photo = np.asarray(img)
    figure = garment_mask(img)
    total = photo.shape[0] * photo.shape[1]
    maps = engine.query_maps(res, m)
    grid = maps.look.shape
    random_map = to_image_frame(rng.random(grid).astype(np.float32), img.width, img.height, size)
    variants: list[tuple[str, str, str, float, Image.Image]] = []
    for p in FRACTIONS:
        n = max(1, int(round(p * total)))
        blocks = random_blocks(figure, n, rng)
        region = np.argsort(-random_map, axis=None, kind="stable")[:n]
        for method, pixels in (("random blocks", blocks), ("random region", region)):
            variants += [("deletion", method, "", p, with_pixels(photo, None, pixels)),
                         ("insertion", method, "", p, with_pixels(photo, pixels, None))]
        for name, term in MAPS.items():
            heat = to_image_frame(term(maps), img.width, img.height, size)
            hot, cold = pixel_sets(heat, figure, n)
            for method, pixels in (("hottest", hot), ("coldest figure", cold)):
                variants += [("deletion", method, name, p, with_pixels(photo, None, pixels)),
                             ("insertion", method, name, p, with_pixels(photo, pixels, None))]
    variants.append(("insertion", "all grey", "", 0.0, Image.new("RGB", img.size, (GREY,) * 3)))
    enc = engine.model.encode_images([v[-1] for v in variants])
    g_x, parts_x = engine.index.tokens(np.array([m.row]))
    with torch.inference_mode():
        scores = engine.model.align_tokens(enc.global_, enc.parts, g_x, parts_x).scores[:, 0].numpy()
    grey = float(scores[-1])
    out: dict = {"score": m.score, "grey": grey}
    for (test, method, name, p, _), s in zip(variants[:-1], scores[:-1]):
        change = m.score - float(s) if test == "deletion" else float(s) - grey
        out.setdefault(test, {}).setdefault(f"{method}|{name}", {})[p] = change
    return out


BASELINES = ("coldest figure", "random blocks", "random region")


def summarise(per_query: list[dict]) -> dict:
    """Mean drop / gain per test, method, map and p, and each map's hottest region against each baseline: the
    ratio of the mean changes averaged over p, and the mean of the per-p ratios."""
    summary: dict = {}
    for test in ("deletion", "insertion"):
        keys = per_query[0][test].keys()
        means = {k: {p: float(np.mean([q[test][k][p] for q in per_query])) for p in FRACTIONS} for k in keys}
        rows = {}
        for name in MAPS:
            hot = means[f"hottest|{name}"]
            row = {"hottest": hot, "coldest figure": means[f"coldest figure|{name}"]}
            for base in BASELINES:
                other = means[f"{base}|{name}"] if base == "coldest figure" else means[f"{base}|"]
                row[f"vs {base}"] = _ratio(np.mean(list(hot.values())), np.mean(list(other.values())))
                row[f"vs {base}, mean of per-p"] = float(np.mean([_ratio(hot[p], other[p]) for p in FRACTIONS]))
            rows[name] = row
        summary[test] = {"maps": rows, "random blocks": means["random blocks|"],
                         "random region": means["random region|"]}
    return summary


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("inf")


def report(summary: dict, n: int) -> None:
    print(f"{n} test queries, each against its #1 product; score change when p % of the photo's pixels go "
          "(deletion: drop) or alone stay (insertion: gain over the all-grey photo)")
    for test, s in summary.items():
        print(f"\n{test:<32}" + "".join(f"{f'p={p:.0%}':>9}" for p in FRACTIONS))
        for base in ("random blocks", "random region"):
            print(f"  {base:<30}" + "".join(f"{v:>9.4f}" for v in s[base].values()))
        for name, row in s["maps"].items():
            for method in ("hottest", "coldest figure"):
                print(f"  {f'{name}: {method}':<30}" + "".join(f"{v:>9.4f}" for v in row[method].values()))
        print(f"  hottest region against{'':<9}" + "".join(f"{b:>17}" for b in BASELINES))
        for name, row in s["maps"].items():
            print(f"  {name:<31}" + "".join(f"{row[f'vs {b}']:>8.2f} ({row[f'vs {b}, mean of per-p']:>5.2f})"
                                            for b in BASELINES))
        print("  (ratio of the mean changes over p; in brackets the mean of the per-p ratios)")


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = [100 * p for p in FRACTIONS]
    for ax, (test, s) in zip(axes, summary.items()):
        ax.plot(xs, list(s["random blocks"].values()), "k:", label="random 16 px blocks")
        ax.plot(xs, list(s["random region"].values()), "k-.", label="random region")
        for name, colour in zip(MAPS, ("tab:blue", "tab:red")):
            row = s["maps"][name]
            ax.plot(xs, list(row["hottest"].values()), "-o", color=colour, label=f"{name}: hottest")
            ax.plot(xs, list(row["coldest figure"].values()), "--", color=colour, label=f"{name}: coldest figure")
        ax.set_xlabel("pixels of the photo (%)")
        ax.set_ylabel("score drop" if test == "deletion" else "score gain over all grey")
        ax.set_title(test)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _read_progress(path: str | None) -> dict[str, dict | None]:
    """The queries a stopped run finished (its --progress file), by path; JSON keys back to the fractions."""
    if not path or not Path(path).exists():
        return {}
    done = {}
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the stop
            continue
        figures = row["figures"]
        if figures is not None:
            for test in ("deletion", "insertion"):
                figures[test] = {k: {float(p): v for p, v in by_p.items()} for k, by_p in figures[test].items()}
        done[row["path"]] = figures
    return done


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.faithfulness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="an In-shop root: its query photos are searched")
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="the gallery index (default: the demo index)")
    p.add_argument("--weights", help="Hub id or checkpoint folder (default: embedded; must match the index)")
    p.add_argument("--queries", type=int, help="only the first N queries")
    p.add_argument("--seed", type=int, default=0, help="for the random blocks")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--progress", help="each query's figures are added to this JSON-lines file as it is done; a run "
                                      "given the same file goes on after the queries it holds")
    p.add_argument("--plot", help="draw the curves here (PNG)")
    args = p.parse_args(argv)
    engine = SearchEngine.load(args.index, weights=args.weights)
    data = load_retrieval_data(args.data)
    queries = data.query[:args.queries] if args.queries else data.query
    side = working_side(engine.model.config.image_size)
    done = _read_progress(args.progress)
    per_query = [q for q in done.values() if q is not None]
    todo = [(i, r) for i, r in enumerate(queries) if r.path not in done]
    for i, r in tqdm(todo, desc="queries", unit="query", initial=len(queries) - len(todo), total=len(queries)):
        rng = np.random.default_rng([args.seed, i])  # the same blocks for a query whether run at once or resumed
        out = one_query(engine, load_image(Path(data.root) / r.path, max_side=side), rng)
        if out is not None:
            per_query.append(out)
        if args.progress:
            with open(args.progress, "a") as f:  # a line per query: a stopped run loses at most one
                f.write(json.dumps({"path": r.path, "figures": out}) + "\n")
    summary = summarise(per_query)
    report(summary, len(per_query))
    if args.json:
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps({"summary": summary, "queries": len(per_query)}, indent=1) + "\n")
    if args.plot:
        plot(summary, args.plot)
    return summary


if __name__ == "__main__":
    main()
