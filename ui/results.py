"""A search as the app runs it: the query decoded and searched, its results as the gallery's items, and the
API's JSON."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from mga import GalleryFileError, Garment, SearchResult, garment_kind, return_freed_soon

from .cards import caption, colour, item_name, product_name, shown_index
from .inputs import autocrop, decode_query, parse_category, parse_k
from .session import UIResult, jpeg
from .settings import ALL_CATEGORIES, DEFAULT_K, LoadedEngine

log = logging.getLogger(__name__)
# Gallery images for API clients: GALLERY_ROUTE/<image number>/<file name>, relative to the app's address.
GALLERY_ROUTE = "gallery"


def run_search(loaded: LoadedEngine, image: Any, k: Any = DEFAULT_K, category: str | None = None,
               crop: bool = False, explain: bool = True, colour: str | None = None,
               like: int | None = None, garment: str | None = None, garments: Sequence[Garment] = ()) -> UIResult:
    """Decode (ImageError on bad input), optionally auto-crop, search, and list the gallery items. With `explain`
    each match's score is spread over the query's cells (drawn when it is opened: match_images).
    `colour`: only products that come in it ("", None or ALL_CATEGORIES's "All": every colour). `like`: the
    gallery image the photo is ("more like this"), whose product the results leave out. `garment`: a kind of
    garment among `garments` (the photo's, as its search found them) searched alone: its region of the photo,
    among the shop's categories of its kind (the one the whole photo's search found: the whole photo)."""
    k_int = parse_k(k)
    cat = parse_category(category, loaded.engine.categories)
    img = decode_query(image)
    autocropped = None
    if crop:
        trimmed = autocrop(img)
        autocropped, img = trimmed.size != img.size, trimmed
    picked = next((g for g in garments if g.kind == garment and not g.found), None)
    searched, cats = img, cat
    if picked is not None:  # a category of the garment's kind narrows it further; any other would empty it
        searched = picked.crop(img)
        cats = cat if cat and garment_kind(cat) == picked.kind else picked.categories(loaded.engine.categories)
    try:
        wanted = None if colour in (None, "", ALL_CATEGORIES) else str(colour)
        item = loaded.engine.index.items[like] if like is not None else {}
        res = loaded.engine.search(searched, k=k_int, category=cats, explain=explain, products=True,
                                   colour=wanted, exclude=None if like is None else str(item.get("item_id", "")))
        if wanted:  # the engine knew it, in some spelling: the shop's
            wanted = next(c for c in loaded.engine.colours.names() if c.lower() == wanted.lower())
        if picked is not None:
            whole = image if isinstance(image, bytes) else jpeg(img)
            found = dict(garments=list(garments), garment=picked.kind, source=whole)
        else:
            found = dict(garments=res.garments)
        kept = image if isinstance(image, bytes) and not autocropped and picked is None else None  # as it was
        return UIResult.of(searched, res, gallery_items(loaded, res), cat, kept, colour=wanted,
                           autocropped=autocropped, like=like, like_name=item_name(item) if item else "", **found)
    finally:
        return_freed_soon()  # what the search freed goes back to the system, not to this worker thread's arena


def gallery_items(loaded: LoadedEngine, res: SearchResult) -> list[tuple[str, str]]:
    """The results' photos (app copies) and captions. A photo the gallery no longer has (or never could serve)
    leaves its result out, said in the log: one bad file must not fail every search that would show it."""
    items, kept = [], []
    for m in res.matches:
        try:
            if shown_index(m) != m.index:  # opening the match shows the photo that matched: it must be there too
                loaded.files.display(m.index)
            items.append((loaded.files.display(shown_index(m)), caption(m)))
        except GalleryFileError as exc:
            log.warning("a result left out: %s", exc)
            continue
        kept.append(m)
    for rank, m in enumerate(kept, 1):
        m.rank = rank
    res.matches = kept
    return items


def gallery_url(index: int, image: str) -> str:
    return f"{GALLERY_ROUTE}/{index}/{Path(image).name}"


def api_payload(ui: UIResult, weights_label: str) -> dict[str, Any]:
    """The /search API's JSON: ranked products (each with a URL of its photo, relative to the app's address)
    plus what produced them (the category and colour searched, in the shop's spelling)."""
    results = []
    for m in ui.result.matches:
        shown = m.shown_image or m.image
        fields = {k: v for k, v in m.to_dict().items() if k != "shown_image"}
        # the card's photo and colour (the product in the colour nearest the query's); score, parts and
        # matched_view describe the photo that matched
        results.append({**fields, "product_name": product_name(m), "color": colour(m), "image": shown,
                        "url": gallery_url(shown_index(m), shown), "matched_image": m.image,
                        "matched_url": gallery_url(m.index, m.image)})
    return {
        "results": results,
        "confident": ui.confident,
        "k": len(ui.result.matches),
        "category": ui.category or ALL_CATEGORIES,
        "color": ui.colour or ALL_CATEGORIES,  # the colour the products were narrowed to
        "query_size": list(ui.result.query_size),
        "whole_garment": ui.result.whole_garment,  # searched among whole photos only (not a close-up)
        # the garments the photo shows (regions as fractions x0, y0, x1, y1), the one the results are of first
        "garments": [{"kind": g.kind, "name": g.name, "box": [round(v, 4) for v in g.box],
                      "searched": g.kind == ui.shown_garment}
                     for g in sorted(ui.garments, key=lambda g: g.kind != ui.shown_garment)],
        "timings_ms": {k: round(v, 2) for k, v in ui.result.timings.items()},
        "weights": weights_label,
    }
