"""Match confidence: fit the calibrator outside the test split, then measure how well it tells a correct #1 of a
consumer-style photo from the #1 of a photo of something the shop does not sell.

    python -m bench.confidence --data ../shared/data/luma-inshop [--weights DIR] [--fit] [--json out.json]
                               [--plot docs/confidence.png]

Fit (`--fit`, written into the checkpoint's config.json; the embedded default when no --weights): the training
split's items, half of each item's photos as the shop and the other half as queries, each query photo clean and
under every corruption of bench.robustness with backgrounds from distractors/validation; negatives are every
photo of distractors/validation (other people's garments, shoes and hats: nothing the shop sells). Labels: 1
where the #1 product is the query's, else 0.
Measure: the test split's gallery photos as the shop, its query photos clean and corrupted (backgrounds from
distractors/test) against every photo of distractors/test. Prints the AUROC of correct #1 results against the #1
of not-sold garments and of shoes and hats, and, per threshold, how many results are shown as confident, how
often those are right, and how many photos of things the shop does not sell are shown as confident; and over every
photo, how far the probability is from how often it is right (Brier score, expected calibration error).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from bench.robustness import corruptions
from index_builder import build_index
from mga.config import SHARED_DATA, TEST_DISTRACTORS, TRAIN_BACKGROUNDS
from mga.confidence import CONFIDENT, auroc, brier, calibration_error, features, fit, probability, reliability
from mga.data import Record, category_of, load_retrieval_data
from mga.files import atomic_path
from mga.hub import load_model
from mga.imageio import load_image, load_photo
from mga.index import GalleryIndex
from mga.search import SearchEngine

OTHER_KINDS = ("shoes", "hat")  # distractor classes of a kind the shop has no product of; the rest are garments
SHOP, GARMENT, OTHER_KIND = 0, 1, 2  # what a measured photo is: a shop product's, or one of a not-sold garment or kind


def shop_index(model, root: Path, records: Sequence[Record], out: Path) -> SearchEngine:
    """An index of `records` (copied into a gallery folder with their item ids), searched with `model`."""
    gallery = out / "gallery"
    for r in records:
        (gallery / r.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / r.path, gallery / r.path)
    with open(gallery / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "item_id", "category"])
        w.writerows([r.path, r.item_id, category_of(r.path)] for r in records)
    build_index(gallery, out / "index", model=model, progress=False, log=lambda msg: None)
    return SearchEngine(model, GalleryIndex(out / "index"))


def consumer_photos(paths: Sequence[Path], backgrounds: list[Path], seed: int) -> list[tuple[int, Image.Image]]:
    """(which path, photo) for every path, clean and under each corruption of bench.robustness (clutter drawn from
    `backgrounds`)."""
    rng = random.Random(seed)
    photos = [load_photo(p) for p in paths]  # decoded once; the corruptions return new images
    return [(i, corrupt(img, rng)) for corrupt in corruptions(backgrounds).values() for i, img in enumerate(photos)]


def top_features(engine: SearchEngine, photos: Sequence[Image.Image]) -> tuple[np.ndarray, list[str]]:
    """Features of each photo's #1 product as the engine shows it (mga.confidence.features of its score and lead)
    and that product's id."""
    x, ids = [], []
    for img in photos:
        best = engine.search(img, k=1, explain=False, products=True).matches[0]
        x.append(features(best.score, best.lead))
        ids.append(best.item_id)
    return np.array(x), ids


def labelled(engine: SearchEngine, queries: Sequence[Record], root: Path, backgrounds: Path, seed: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, correct #1?, SHOP / GARMENT / OTHER_KIND) for the consumer-style queries, then every photo of
    `backgrounds` (a distractors split: things the shop does not sell, and the queries' clutter)."""
    not_sold = sorted(backgrounds.rglob("*.jpg"))
    shots = consumer_photos([root / r.path for r in queries], not_sold, seed)
    xq, ids = top_features(engine, [img for _, img in shots])
    correct = np.array([ids[n] == queries[i].item_id for n, (i, _) in enumerate(shots)])
    xn, _ = top_features(engine, [load_image(p) for p in not_sold])
    group = [OTHER_KIND if p.parent.name in OTHER_KINDS else GARMENT for p in not_sold]
    return np.vstack([xq, xn]), np.r_[correct, np.zeros(len(xn), bool)], np.r_[np.full(len(xq), SHOP), group]


def plot_confidence(prob: np.ndarray, correct: np.ndarray, group: np.ndarray, path: str | Path) -> None:
    """Two panels: how often a #1 is right against the probability the app shows for it (reliability; on the
    diagonal it says what it means), and where each kind of photo's probability falls against the app's threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rel, hist) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    bins = reliability(prob, correct)
    rel.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="says what it means")
    rel.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label="every photo")
    for mean, rate, share in bins:
        rel.annotate(f"{share:.0%}", (mean, rate), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    rel.set(xlabel="probability shown (mean of its bin)", ylabel="share of those #1s that are right",
            title=f"reliability (calibration error {calibration_error(prob, correct):.3f})", xlim=(0, 1),
            ylim=(0, 1.05))
    rel.legend(loc="upper left", fontsize=8)
    kinds = {"shop product, right #1": (group == SHOP) & correct, "shop product, wrong #1": (group == SHOP) & ~correct,
             "other people's garments": group == GARMENT, " and ".join(OTHER_KINDS): group == OTHER_KIND}
    edges = np.linspace(0, 1, 21)
    for name, chosen in kinds.items():
        hist.hist(prob[chosen], bins=edges, histtype="step", lw=1.5, density=True, label=f"{name} ({chosen.sum()})")
    hist.axvline(CONFIDENT, color="grey", ls="--", lw=1)
    hist.set(xlabel="probability shown for the #1", ylabel="density", title="who gets which probability")
    hist.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.confidence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED_DATA / "luma-inshop"))
    p.add_argument("--weights", help="checkpoint folder (default: the embedded default)")
    p.add_argument("--fit", action="store_true", help="fit the calibrator and write it into config.json first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    p.add_argument("--plot", help="write the reliability and probability plot (PNG) here")
    args = p.parse_args(argv)
    from mga.config import DEFAULT_WEIGHTS_DIR

    weights = Path(args.weights or DEFAULT_WEIGHTS_DIR)
    model = load_model(weights)
    data = load_retrieval_data(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fit:
            by_item: dict[str, list[Record]] = {}
            for r in data.train:
                by_item.setdefault(r.item_id, []).append(r)
            items = [rs for rs in by_item.values() if len(rs) >= 2]
            shop = [r for rs in items for r in rs[::2]]
            queries = [r for rs in items for r in rs[1::2]]
            engine = shop_index(model, data.root, shop, Path(tmp) / "fit")
            x, y, _ = labelled(engine, queries, data.root, TRAIN_BACKGROUNDS, args.seed)
            model.config.confidence = {**fit(x, y.astype(float)),
                                       "fitted_on": f"{len(x)} photos outside the test split"}
            model.config.save(weights)
            print(f"fitted on {len(x)} photos ({int(y.sum())} correct #1): {model.config.confidence}")
        engine = shop_index(model, data.root, data.gallery, Path(tmp) / "test")
        x, correct, group = labelled(engine, data.query, data.root, TEST_DISTRACTORS, args.seed + 1)
    cal = model.config.confidence
    if not cal:
        raise SystemExit(f"{weights}: no calibration in config.json; run with --fit first")
    prob = np.array([probability(cal, row) for row in x])
    garment, other = group == GARMENT, group == OTHER_KIND
    result = {"auroc_garments": auroc(prob[correct], prob[garment]),
              "auroc_raw_score_garments": auroc(x[correct, 0], x[garment, 0]),
              "auroc": auroc(prob[correct], prob[other]), "auroc_raw_score": auroc(x[correct, 0], x[other, 0]),
              "queries": int((group == SHOP).sum()), "correct_top1": int(correct.sum()),
              "not_sold_garments": int(garment.sum()), "not_sold": int(other.sum()),
              "brier": brier(prob, correct), "calibration_error": calibration_error(prob, correct), "thresholds": []}
    print(f"test: {result['queries']} consumer-style photos of shop products ({result['correct_top1']} with a correct "
          f"#1); not sold: {result['not_sold_garments']} photos of other garments, {result['not_sold']} of "
          f"{' and '.join(OTHER_KINDS)}")
    for name, key in (("other garments", "_garments"), (" and ".join(OTHER_KINDS), "")):
        print(f"AUROC, correct #1 against {name}: confidence {result['auroc' + key]:.3f}, raw score "
              f"{result['auroc_raw_score' + key]:.3f}")
    print(f"every photo: Brier score {result['brier']:.4f}, "
          f"expected calibration error {result['calibration_error']:.4f}")
    print(f"{'threshold':>9} {'shown confident':>16} {'precision':>10} {'recall':>7} {'garments confident':>19} "
          f"{'shoes/hats confident':>21}")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        shown = prob >= t
        row = {"threshold": t, "confident": int(shown.sum()),
               "precision": float(correct[shown].mean()) if shown.any() else float("nan"),
               "recall": float(shown[correct].mean()), "not_sold_garments_confident": float(shown[garment].mean()),
               "not_sold_confident": float(shown[other].mean())}
        result["thresholds"].append(row)
        print(f"{t:>9.1f} {row['confident']:>16d} {row['precision']:>10.3f} {row['recall']:>7.3f} "
              f"{row['not_sold_garments_confident']:>19.3f} {row['not_sold_confident']:>21.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_confidence(prob, correct, group, args.plot)
    return result


if __name__ == "__main__":
    main()
