"""The one search engine, for the app and the command line: query image -> ranked, explained gallery matches.

Coarse to fine: FAISS over the coarse embeddings of an index folder (`python -m index_builder`; a row per view
of each gallery image, mga.views) gives the top M images, each scored by its best view (mga.coarse); ATA re-ranks
them with the stored tokens of all their views and explains the top k with heatmaps on the view that matched.

    python -m mga.search --index assets/demo-index --image photo.jpg [-k 10] [--category Tees] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .cells import CellSplit
from .config import CATEGORY_VOTE, DEFAULT_INDEX_DIR, DEFAULT_RERANK_TOP, DEFAULT_VIEWS
from .explained import ExplainsMatches, KeptQueries
from .hub import describe_weights
from .imageio import ImageError, ImageSource, load_image
from .matches import Match, SearchResult
from .index import GalleryIndex, check_fits
from .index_format import IndexFormatError, IndexMismatchError
from .model import Encoding, MGAModel
from .closeup import VIEWS, detector
from .colour import GalleryColours, choose, garment_colour, photo_pixels
from .garments import find_garments, parts_on_skin
from .confidence import likely, set_confidence
from .part_names import names_for
from .ranking import Ranked, distinct, rank


class SearchEngine(ExplainsMatches):
    """Model + index folder. Thread-safe: searches share only read-only state (the model runs in eval mode
    under torch.inference_mode, nothing writes to the index's memory maps, FAISS searches are const) and the
    store of the last searches' query cells (mga.explained.KeptQueries), which locks."""

    def __init__(self, model: MGAModel, index: GalleryIndex, weights: str | Path | None = None):
        self.model = model.eval()
        self.index = index
        self.weights = weights
        self.fingerprint = fp = model.fingerprint()
        check_fits(index, model, weights, fp)  # an index of other weights or widths would fail every search
        self.closeup = detector(model, fp)  # once here, not per query
        self.kept = KeptQueries()  # what explains the last searches' matches when they are opened
        self.categories: list[str] = index.categories
        # each gallery photo's garment colour, read from its thumbnail (at most 256 px) when a search first needs it
        self.colours = GalleryColours(index.items, lambda i: self.gallery_image(i, max_side=256))
        cfg = model.config
        self.info: dict[str, Any] = {
            "weights": describe_weights(weights), "fingerprint": fp, "index": str(index.path),
            "index_type": index.index_type, "images": len(index), "categories": self.categories,
            "items": len({it.get("item_id") for it in index.items}), "image_size": cfg.image_size,
            "num_parts": cfg.num_parts, "built": index.manifest.get("built_at", ""),
            "skipped": index.manifest.get("counts", {}).get("skipped", 0),
        }

    @classmethod
    def load(cls, index_dir: str | Path = DEFAULT_INDEX_DIR, weights: str | Path | None = None,
             model: MGAModel | None = None, device: str = "cpu") -> "SearchEngine":
        """Open an index folder with a model (given, or loaded from `weights`; None = embedded default).
        Raises IndexMismatchError when the index was built with other weights."""
        index = GalleryIndex(index_dir)
        if model is None:
            from .hub import load_model

            model = load_model(weights, device=device)
        return cls(model, index, weights)

    # ---------------------------------------------------------------- querying
    def encode(self, image: Image.Image, cells: bool = False) -> Encoding | tuple[Encoding, CellSplit]:
        """One image's encoding; with `cells`, also what splits its global token over its cells (explanations)."""
        x = self.model.transform(image)[None]
        return self.model.encode_cells(x) if cells else self.model.encode(x)

    def search(self, image: ImageSource, k: int = 10, category: str | Sequence[str] | None = None,
               rerank_top: int = DEFAULT_RERANK_TOP, explain: bool = True, products: bool = False,
               views: str = DEFAULT_VIEWS, category_vote: float = CATEGORY_VOTE,
               colour: str | None = None, exclude: str | None = None) -> SearchResult:
        """Ranked matches for one query image (anything `load_image` takes; ImageError propagates). Each product's
        card shows its photo in the colour nearest the query's garment (mga.colour); `colour` (a colour name of the
        shop's) lists only products that come in it, shown in it. `exclude`: a product (item id) left out of the
        results and of their belief ("more like this" product: the others). `category` may be several (a
        garment's kind: mga.garments). The result names the garments the photo shows (`garments`)."""
        t0 = time.perf_counter()
        img = load_image(image, name=None if not isinstance(image, (str, Path)) else str(image))
        pixels = photo_pixels(img)  # while the photo's pixels are still in the CPU's caches
        q, split = self.encode(img, cells=True) if explain else (self.encode(img), None)
        attn = q.attn[0].float().numpy()
        query_colour = garment_colour(img, attn, pixels)
        encode_ms = (time.perf_counter() - t0) * 1e3
        res = self.search_encoding(q, k, category, rerank_top, query_size=img.size, products=products, views=views,
                                   category_vote=category_vote, split=split, colour=colour,
                                   query_colour=query_colour, exclude=exclude)
        t1 = time.perf_counter()
        # garments only on a photo of something the shop sells: there, the #1's kind of garment is the photo's
        sells = bool(res.matches) and likely(res.matches[0].confidence)
        res.garments = find_garments(img.size, pixels[1], attn, res.matches[0].category) if sells else []
        res.parts_on_skin = parts_on_skin(attn, pixels[0])
        res.timings["garments_ms"] = (time.perf_counter() - t1) * 1e3
        res.timings["encode_ms"] = encode_ms
        res.timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return res

    def search_encoding(self, q: Encoding, k: int = 10, category: str | Sequence[str] | None = None,
                        rerank_top: int = DEFAULT_RERANK_TOP, query_size: tuple[int, int] | None = None,
                        products: bool = False, views: str = DEFAULT_VIEWS, category_vote: float = CATEGORY_VOTE,
                        split: CellSplit | None = None, colour: str | None = None,
                        query_colour: np.ndarray | None = None, exclude: str | None = None) -> SearchResult:
        """Ranked matches for an already encoded query (one image; `query_size` its (w, h)).
        `products`: one match per product (item id), its best-scoring photo, as a shop lists them.
        `views` (mga.closeup.VIEWS): "all" (config.DEFAULT_VIEWS) searches every view; "auto" searches a close-up
        among the gallery's zoom windows too, a whole garment among full photos only. `category_vote`: the weight of
        the re-ranked images' vote on the query's kind of garment (mga.category_vote; 0: off). `split`: what splits the
        query's global token over its cells (MGAModel.encode_cells): with it the matches can be explained when
        opened, the score spread over either photo's cells term by term (`query_maps`, `match_maps`). `colour`: only
        products that come in this colour (a name of the shop's, any case), each shown in it; `query_colour`: the
        query's garment colour (mga.colour.garment_colour), each product then shown in its nearest photo. `exclude`: a
        product (item id) left out."""
        t0 = time.perf_counter()
        if category == "":
            category = None
        for one in [category] if isinstance(category, str) else category or []:
            if self.index.category_label(one) is None:
                raise ValueError(f"unknown category {one!r}; the index has {self.categories}")
        if colour and colour.lower() not in (c.lower() for c in self.colours.names()):
            shown = colour if len(colour) <= 40 else colour[:40] + "..."  # a huge string is not echoed back
            raise ValueError(f"unknown colour {shown!r}; the shop's photos come in {self.colours.names()}")
        ranked = self.rank(q, k, category, rerank_top, views, category_vote)
        images, whole, query_global = ranked.images, ranked.whole, q.global_[0].float().numpy()
        if len(images) == 0:
            t1 = time.perf_counter()
            return SearchResult([], {**ranked.timings, "total_ms": (t1 - t0) * 1e3},
                                tuple(query_size or (0, 0)), whole, query_global)
        item_ids = [str(self.index.items[int(i)].get("item_id", "")) for i in images]  # per candidate
        kept = np.array([j for j in ranked.order if item_ids[j] != exclude], dtype=np.int64)
        every_product = distinct([item_ids[j] for j in kept], kept)
        in_colour, by_product = kept, every_product
        if colour:  # a colour facet: the candidates of products that come in it
            in_colour = np.array([j for j in kept if colour.lower() in self.colours.colours(item_ids[j])],
                                 dtype=np.int64)
            by_product = distinct([item_ids[j] for j in in_colour], in_colour)
        order = by_product if products else in_colour
        t2 = time.perf_counter()
        matches = [self._match(r + 1, ranked, int(j)) for r, j in enumerate(order[:k])]
        # one belief over every candidate product, read from what the ranking reads: its ATA score and its vote; a
        # colour facet hides products, it does not make the shown ones likelier
        set_confidence(matches, [(item_ids[j], ranked.score(int(j)),
                                  ranked.score(int(j)) + ranked.bonus[j])
                                 for j in every_product], self.model.config.confidence)
        t3 = time.perf_counter()
        self._show_colours(matches, query_colour, colour)
        t4 = time.perf_counter()
        timings = {**ranked.timings, "matches_ms": (t3 - t2) * 1e3, "colour_ms": (t4 - t3) * 1e3,
                   "total_ms": (t4 - t0) * 1e3}
        return SearchResult(matches, timings, tuple(query_size or (0, 0)), whole, query_global,
                            query_id=None if split is None else self.kept.keep(split, q))

    def rank(self, q: Encoding, m: int, category: str | Sequence[str] | None = None,
             rerank_top: int = DEFAULT_RERANK_TOP, views: str = DEFAULT_VIEWS,
             category_vote: float = CATEGORY_VOTE) -> Ranked:
        """The top max(m, rerank_top) images for an encoded query as every search ranks them (mga.ranking.rank)."""
        return rank(self.model, self.index, self.closeup, q, m, category, rerank_top, views, category_vote)

    def _match(self, rank: int, ranked: Ranked, j: int) -> Match:
        image, c = int(ranked.images[j]), int(ranked.pick[j])
        it = self.index.items[image]
        contrib = ranked.alignment.contributions[0, c].numpy()
        return Match(
            rank=rank, score=ranked.score(j), coarse_score=float(ranked.coarse[j]),
            item_id=str(it.get("item_id", "")), category=str(it.get("category", "")),
            image=self.index.relative_path(image),
            metadata=dict(it.get("meta", {})), contributions=[float(x) for x in contrib],
            part_names=names_for(self.model.config.part_names, it.get("category"), len(contrib)),
            global_contribution=float(ranked.alignment.global_term[0, c]),
            anchor_contribution=float(ranked.alignment.anchor_term[0, c]),
            index=image,
            row=int(ranked.rows[c]), assignment=ranked.alignment.assignment[0, c].numpy(),
            box=tuple(float(b) for b in self.index.boxes[int(ranked.rows[c])]),
            photos=self.index.item_photos.get(it.get("item_id"), 1),
            category_vote=float(ranked.bonus[j]))

    def _show_colours(self, matches: list[Match], query_colour: np.ndarray | None, colour: str | None) -> None:
        """Each match's card photo: its product's photo in the `colour` asked for, else the one nearest the query's
        garment colour, with the product's other colours (mga.colour.choose)."""
        if query_colour is None and not colour:
            return
        for m in matches:
            shown = choose(self.colours.photos(m.item_id), query_colour, self.colours, m.index, colour)
            m.shown_index, m.shown_image = shown.image, self.index.relative_path(shown.image)
            m.shown_colour, m.other_colours, m.in_query_colour = shown.colour, shown.others, shown.in_query_colour

    def gallery_image(self, i: int, original: bool = False, max_side: int | None = None) -> Image.Image:
        """Gallery image i (its thumbnail unless `original`; within max_side), e.g. for "more like this";
        GalleryFileError or ImageError (naming it by its gallery path) when it cannot be had."""
        return load_image(self.index.read_image(i, display=not original), name=self.index.relative_path(i),
                          max_side=max_side)

    def gallery_encoding(self, i: int) -> Encoding:
        """The stored encoding of image i's full photo: search with it for "more like this" without re-encoding."""
        return self.index.encoding(self.index.first_row[i:i + 1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mga.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="index folder (default: the demo index)")
    p.add_argument("--image", required=True, help="query image")
    p.add_argument("--weights", help="Hub id or checkpoint folder; default: embedded (must match the index)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--category", help="only this category")
    p.add_argument("--rerank-top", type=int, default=DEFAULT_RERANK_TOP, help="candidates ATA re-ranks (0: off)")
    p.add_argument("--views", choices=VIEWS, default=DEFAULT_VIEWS,
                   help="gallery views searched: every view (all), zoom windows for close-ups only (auto: the "
                        "model's close-up detector), full photos only")
    p.add_argument("--category-vote", type=float, default=CATEGORY_VOTE,
                   help="weight of the re-ranked images' vote on the query's kind of garment (0: off)")
    p.add_argument("--colour", help="only products that come in this colour (a colour name of the shop's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    from .hub import WeightsError

    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout JSON-clean whatever loading prints
            engine = SearchEngine.load(args.index, weights=args.weights)
        res = engine.search(args.image, k=args.k, category=args.category, rerank_top=args.rerank_top,
                            explain=False, views=args.views, category_vote=args.category_vote, colour=args.colour)
    except (WeightsError, ImageError, IndexMismatchError, IndexFormatError, ValueError) as exc:
        # weights that cannot be loaded (offline, a bad checkpoint), an index or photo that cannot be read: one
        # line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"matches": res.to_json(), "whole_garment": res.whole_garment, "timings": res.timings},
                         indent=2))
        return 0
    print(f"{len(engine.index)} images in {args.index} ({engine.index.index_type}), searched "
          f"{'full photos only (a whole garment)' if res.whole_garment else 'every view'}; "
          f"{' '.join(f'{k} {v:.1f}' for k, v in res.timings.items())}")
    for m in res.matches:
        parts = ", ".join(f"{n} {c:+.3f}" for n, c in zip(m.part_names, m.contributions))
        print(f"{m.rank:3d}  {m.score:.4f} {m.category_vote:+.3f}  {m.item_id:<28s} {m.category:<22s} {m.image}   "
              f"[g {m.global_contribution:+.3f} | anchor {m.anchor_contribution:+.3f} | {parts}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
