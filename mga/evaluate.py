"""Standard retrieval evaluation: In-shop (R@1/5/10/20/30/40/50) or Consumer-to-shop (R@1/20/50).

    python -m mga.evaluate --data ../shared/data/luma-inshop [--weights org/name|DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .closeup import VIEWS, whole_garment
from .closeup import detector as closeup_detector
from .config import CATEGORY_VOTE, DEFAULT_RERANK_TOP, DEFAULT_VIEWS
from .data import ImageDataset, Record, RetrievalData, category_of, load_retrieval_data
from .devices import forward_batch, loader_workers, resolve_device
from .files import atomic_path
from .hub import describe_weights, load_model
from .metrics import CONSUMER2SHOP_KS, INSHOP_KS, recall_at_k
from .model import Encoding, MGAModel
from .retrieval import DESCRIPTORS, rank
from .transforms import working_side
from .views import ViewsTransform, ZoomViews, collate_views



def _encode(model: MGAModel, dataset: ImageDataset, images_per_batch: int, batch_size: int | None, workers: int,
            desc: str, collate=None) -> list:
    """Encode a data set, at most `batch_size` views per forward (None: the device's); a DataLoader decodes
    the next batch while this one encodes. Returns (Encoding, labels) per loaded batch."""
    loader = DataLoader(dataset, batch_size=images_per_batch, num_workers=workers, collate_fn=collate)
    return [(model.encode(images, batch_size), labels)
            for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None)]


def encode_records(model: MGAModel, root: Path, records: Sequence[Record], batch_size: int | None = None,
                   workers: int = 0, desc: str = "encode") -> Encoding:
    """Encode data-set images (the full photos)."""
    dataset = ImageDataset(root, records, model.transform, max_side=working_side(model.config.image_size))
    per_batch = batch_size or forward_batch(model.device)
    return Encoding.cat([enc for enc, _ in _encode(model, dataset, per_batch, batch_size, workers, desc)])


def encode_gallery(model: MGAModel, root: Path, records: Sequence[Record], zoom: ZoomViews,
                   batch_size: int | None = None, workers: int = 0,
                   desc: str = "gallery") -> tuple[Encoding, torch.Tensor]:
    """Encode every view of the gallery images (mga.views): (encodings (V), owner (V,) image of each view)."""
    transform = ViewsTransform(zoom, model.transform)
    dataset = ImageDataset(root, records, transform, max_side=working_side(model.config.image_size))
    per_batch = zoom.images_per_batch(batch_size or forward_batch(model.device))
    batches = _encode(model, dataset, per_batch, batch_size, workers, desc, collate=collate_views)
    counts = torch.cat([c for _, c in batches])
    return Encoding.cat([enc for enc, _ in batches]), torch.repeat_interleave(torch.arange(len(counts)), counts)


def encode_split(model: MGAModel, data: RetrievalData, zoom: ZoomViews = ZoomViews(), batch_size: int | None = None,
                 workers: int = 0) -> tuple[Encoding, Encoding, torch.Tensor]:
    """(queries, gallery views, owner of each view): everything `recall` ranks, encoded once."""
    q = encode_records(model, data.root, data.query, batch_size, workers, "queries")
    g, owner = encode_gallery(model, data.root, data.gallery, zoom, batch_size, workers)
    return q, g, owner


def app_order(model: MGAModel, q: Encoding, g: Encoding, owner: torch.Tensor, categories: Sequence[str],
              views: str = DEFAULT_VIEWS, vote: float = CATEGORY_VOTE) -> torch.Tensor:
    """(Q, N) gallery images, best first, ranked as the app ranks them: coarse search over the views the model's
    close-up detector lets each query see, the top re-ranked by ATA, the category vote over them."""
    whole = whole_garment(closeup_detector(model), q.embedding, views)
    return rank(model, q, g, "coarse", DEFAULT_RERANK_TOP, owner, whole, categories, vote)


def recall(model: MGAModel, data: RetrievalData, q: Encoding, g: Encoding, owner: torch.Tensor,
           rerank_top: int = DEFAULT_RERANK_TOP, descriptor: str = "coarse", views: str = DEFAULT_VIEWS,
           vote: float = CATEGORY_VOTE) -> dict:
    """Recall@K of the encoded queries against the encoded gallery views, ranked coarse to fine; `views`: which
    gallery views each query sees (mga.closeup.VIEWS); `vote`: the category vote's weight (mga.category_vote)."""
    ks = INSHOP_KS if data.format == "inshop" else CONSUMER2SHOP_KS
    top = rerank_top if descriptor == "coarse" else 0
    whole = whole_garment(closeup_detector(model), q.embedding, views)
    order = rank(model, q, g, descriptor, top, owner, whole, [category_of(r.path) for r in data.gallery], vote)
    result = recall_at_k(order[:, : max(ks)].numpy(), [r.item_id for r in data.query],
                         [r.item_id for r in data.gallery], ks)
    result.update(queries=len(data.query), gallery=len(data.gallery), gallery_views=len(g), format=data.format,
                  descriptor=descriptor, rerank_top=top, views=views, whole_garment_queries=int(whole.sum()),
                  category_vote=vote)
    return result


def evaluate(model: MGAModel, data: RetrievalData, rerank_top: int = DEFAULT_RERANK_TOP,
             descriptor: str = "coarse", batch_size: int | None = None, workers: int = 0,
             zoom: ZoomViews = ZoomViews(), views: str = DEFAULT_VIEWS, vote: float = CATEGORY_VOTE) -> dict:
    """Recall@K of `data`'s query side against its gallery side (with its zoom views), with the model's
    coarse-to-fine ranking."""
    start = time.perf_counter()
    q, g, owner = encode_split(model, data, zoom, batch_size, workers)
    result = recall(model, data, q, g, owner, rerank_top, descriptor, views, vote)
    result.update(zoom=zoom.to_dict(), seconds=round(time.perf_counter() - start, 1))
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
    p = argparse.ArgumentParser(prog="python -m mga.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root with Eval/list_eval_partition.txt")
    p.add_argument("--format", choices=["inshop", "consumer2shop"], help="default: read off the partition file")
    p.add_argument("--weights", help="Hub id (org/name[@revision]) or checkpoint folder; default: embedded")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True, help="ATA re-ranking")
    p.add_argument("--rerank-top", type=int, default=DEFAULT_RERANK_TOP, help="candidates ATA re-ranks")
    p.add_argument("--descriptor", choices=DESCRIPTORS, default="coarse",
                   help="coarse embedding (global + parts) or the global token alone (ablation)")
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
    result = evaluate(model, data, args.rerank_top if args.rerank else 0, args.descriptor, args.batch_size,
                      workers, ZoomViews(args.zoom_grid, args.zoom_scale, args.zoom_min_cover), args.views,
                      args.category_vote)
    result["weights"] = describe_weights(args.weights)
    print(f"{data.format}: {result['queries']} queries, {result['gallery']} gallery, weights {result['weights']}, "
          f"descriptor {args.descriptor}, ATA re-rank top {result['rerank_top']}, "
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
