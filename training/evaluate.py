"""Standard retrieval evaluation: In-shop (R@1/5/10/20/30/40/50) or Consumer-to-shop (R@1/20/50), the gallery
indexed as the app indexes a shop and every query ranked by the app's own pipeline (Shop), so that the recall
reported is the app's.

    python -m training.evaluate --data ../shared/data/luma-inshop [--weights org/name|DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from index_builder.build import build_index
from index_builder.gallery import listed_gallery
from mga.closeup import VIEWS
from mga.config import CATEGORY_VOTE, DEFAULT_RERANK_TOP, DEFAULT_VIEWS
from mga.data import Record, RetrievalData, load_retrieval_data
from mga.devices import forward_batch, loader_workers, resolve_device
from mga.files import atomic_path
from mga.hub import describe_weights, load_model
from mga.index import GalleryIndex
from mga.index_format import DEFAULT_TOKENS, TOKEN_DTYPES
from mga.model import Encoding, MGAModel
from mga.search import SearchEngine
from mga.transforms import working_side
from mga.views import ZoomViews

from .batches import ImageDataset
from .metrics import CONSUMER2SHOP_KS, INSHOP_KS, recall_at_k


def encode_records(model: MGAModel, root: Path, records: Sequence[Record], batch_size: int | None = None,
                   workers: int = 0, desc: str = "encode") -> Encoding:
    """Encode data-set images (the full photos), at most `batch_size` per forward (None: the device's); a
    DataLoader decodes the next batch while this one encodes."""
    dataset = ImageDataset(root, records, model.transform, max_side=working_side(model.config.image_size))
    loader = DataLoader(dataset, batch_size=batch_size or forward_batch(model.device), num_workers=workers)
    return Encoding.cat([model.encode(images, batch_size)
                         for images, _ in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None)])


class Shop:
    """Gallery photos indexed as the app indexes a shop (index_builder: the same decoding, views, stored tokens
    and FAISS index) and searched by the app's engine (SearchEngine.rank): recall read off it is the app's."""

    def __init__(self, engine: SearchEngine):
        self.engine = engine
        self.item_ids = [str(it.get("item_id", "")) for it in engine.index.items]  # of the index's images
        self.categories = [str(it.get("category", "")) for it in engine.index.items]

    @classmethod
    @contextmanager
    def indexed(cls, model: MGAModel, root: Path, records: Sequence[Record], zoom: ZoomViews = ZoomViews(),
                tokens: str = DEFAULT_TOKENS, batch_size: int | None = None, workers: int = 0) -> Iterator["Shop"]:
        """`records` (their full photos and `zoom` windows) indexed into a temporary folder, kept while in use."""
        gallery = listed_gallery(root, "records", {r.path: r.item_id for r in records})
        with tempfile.TemporaryDirectory(prefix="mga-shop-") as tmp:
            build_index(gallery, Path(tmp) / "index", model, zoom=zoom, tokens=tokens, batch_size=batch_size,
                        workers=workers, thumb_size=0)  # its log names any photo it had to skip
            yield cls(SearchEngine(model, GalleryIndex(Path(tmp) / "index")))

    def rank(self, q: Encoding, k: int, rerank_top: int = DEFAULT_RERANK_TOP, views: str = DEFAULT_VIEWS,
             vote: float = CATEGORY_VOTE) -> tuple[np.ndarray, np.ndarray]:
        """(Q, <= k) index images, best first, as the app ranks each query, and (Q,) whether each query was
        searched among full photos only (a whole garment: mga.closeup)."""
        ranked = [self.engine.rank(q[i:i + 1], k, None, rerank_top, views, vote) for i in range(len(q))]
        n = min([k] + [len(r.images) for r in ranked])
        return (np.stack([r.ranked_images()[:n] for r in ranked]) if ranked else np.zeros((0, n), np.int64),
                np.array([r.whole for r in ranked], dtype=bool))


def recall(shop: Shop, data: RetrievalData, q: Encoding, rerank_top: int = DEFAULT_RERANK_TOP,
           views: str = DEFAULT_VIEWS, vote: float = CATEGORY_VOTE) -> dict:
    """Recall@K of the encoded queries of `data` against the shop, ranked as the app ranks them; `rerank_top`:
    how many coarse candidates ATA re-ranks (0: the coarse stage alone); `views`: which gallery views each query
    sees (mga.closeup.VIEWS); `vote`: the category vote's weight (mga.category_vote)."""
    ks = INSHOP_KS if data.format == "inshop" else CONSUMER2SHOP_KS
    order, whole = shop.rank(q, max(ks), rerank_top, views, vote)
    result = recall_at_k(order, [r.item_id for r in data.query], shop.item_ids, ks)
    result.update(queries=len(data.query), gallery=len(shop.item_ids), gallery_views=shop.engine.index.views,
                  format=data.format, rerank_top=rerank_top, views=views, whole_garment_queries=int(whole.sum()),
                  category_vote=vote)
    return result


def evaluate(model: MGAModel, data: RetrievalData, rerank_top: int = DEFAULT_RERANK_TOP,
             batch_size: int | None = None, workers: int = 0, zoom: ZoomViews = ZoomViews(),
             views: str = DEFAULT_VIEWS, vote: float = CATEGORY_VOTE, tokens: str = DEFAULT_TOKENS) -> dict:
    """Recall@K of `data`'s query side against its gallery side indexed as a shop (`zoom` views, `tokens` stored
    form), ranked as the app ranks."""
    start = time.perf_counter()
    q = encode_records(model, data.root, data.query, batch_size, workers, "queries")
    with Shop.indexed(model, data.root, data.gallery, zoom, tokens, batch_size, workers) as shop:
        result = recall(shop, data, q, rerank_top, views, vote)
    result.update(zoom=zoom.to_dict(), tokens=tokens, seconds=round(time.perf_counter() - start, 1))
    return result


def plot_recall(results: dict[str, dict], path: str | Path, title: str = "Recall@K") -> None:
    """One recall@K curve per named result, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, res in results.items():
        ks = sorted(int(k[2:]) for k in res if k.startswith("R@"))
        ax.plot(ks, [res[f"R@{k}"] for k in ks], marker="o", label=name)
    ax.set(xlabel="K", ylabel="recall@K", title=title, ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root with Eval/list_eval_partition.txt")
    p.add_argument("--format", choices=["inshop", "consumer2shop"], help="default: read off the partition file")
    p.add_argument("--weights", help="Hub id (org/name[@revision]) or checkpoint folder; default: embedded")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True, help="ATA re-ranking")
    p.add_argument("--rerank-top", type=int, default=DEFAULT_RERANK_TOP, help="candidates ATA re-ranks")
    p.add_argument("--tokens", choices=TOKEN_DTYPES, default=DEFAULT_TOKENS,
                   help="how the gallery's index stores its tokens (as index_builder --tokens)")
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid,
                   help="zoom views per gallery image: an N x N grid of windows (0: off, full photos only)")
    p.add_argument("--zoom-scale", type=float, default=ZoomViews().scale, help="window side / garment size")
    p.add_argument("--zoom-min-cover", type=float, default=ZoomViews().min_cover,
                   help="leave out windows with less garment (non-white) than this fraction")
    p.add_argument("--views", choices=VIEWS, default=DEFAULT_VIEWS,
                   help="gallery views a query sees: every view (all), zoom windows for close-ups only (auto, the "
                        "model's close-up detector) or full photos only (full)")
    p.add_argument("--category-vote", type=float, default=CATEGORY_VOTE,
                   help="weight of the re-ranked images' vote on the query's kind of garment "
                        "(mga.category_vote; 0: off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int,
                   help="most images per forward (default: the device's, config.FORWARD_BATCH)")
    p.add_argument("--workers", type=int, help="decoding processes (default: the device's, config.LOADER_WORKERS)")
    p.add_argument("--json", help="write the metrics here")
    p.add_argument("--plot", help="write a recall@K plot (PNG) here")
    args = p.parse_args(argv)

    model = load_model(args.weights, device=str(resolve_device(args.device)))
    data = load_retrieval_data(args.data, args.format)
    workers = loader_workers(model.device) if args.workers is None else args.workers
    result = evaluate(model, data, args.rerank_top if args.rerank else 0, args.batch_size, workers,
                      ZoomViews(args.zoom_grid, args.zoom_scale, args.zoom_min_cover), args.views,
                      args.category_vote, args.tokens)
    result["weights"] = describe_weights(args.weights)
    print(f"{data.format}: {result['queries']} queries, {result['gallery']} gallery, weights {result['weights']}, "
          f"tokens {args.tokens}, ATA re-rank top {result['rerank_top']}, "
          f"{result['gallery_views']} gallery views (zoom grid {args.zoom_grid}); views {args.views}: "
          f"{result['whole_garment_queries']} queries saw full photos only; category vote {args.category_vote:g}")
    print("  ".join(f"{k} {v:.3f}" for k, v in result.items() if k.startswith("R@")))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_recall({"MGA" + (" + ATA" if result["rerank_top"] else ""): result}, args.plot)
    return result


if __name__ == "__main__":
    main()
