"""What users see: a SearchResult as gallery items, a match's overlays and part chart, and the API's JSON."""
from __future__ import annotations

import functools
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mga.colour import colour_name
from mga.confidence import CONFIDENT, likely
from mga.explain import OVERALL, WHOLE, overlay
from mga.garments import KIND_NAMES, ON_SKIN, Garment
from mga.heap import return_freed_soon
from mga.imageio import ImageError
from mga.index import GalleryFileError
from mga.matches import Match, SearchResult
from mga.parts import garment_kind
from mga.views import FULL_BOX

from .inputs import autocrop, decode_query, parse_category, parse_k
from .settings import ALL_CATEGORIES, DEFAULT_K, LoadedEngine

log = logging.getLogger(__name__)
# Metadata columns that only the index needs (ids, splits, provenance): never shown to shoppers.
HIDDEN_FIELDS = {"product_name", "color", "view", "evaluation_status", "source", "image_name", "path", "split"}
# Gallery images for API clients: GALLERY_ROUTE/<image number>/<file name>, relative to the app's address.
GALLERY_ROUTE = "gallery"
# Largest side of the images the app shows (overlays): browsers don't need a 6000 px photo.
DISPLAY_MAX_SIDE = 320
# Heatmaps come from a coarse token grid: computing them at 256 px (then resized for display) loses nothing
# visible and keeps "explain" cheap for k results.
HEATMAP_SIDE = 256


# A session keeps its query photo as a JPEG of this quality (a tenth of the decoded pixels' memory): every visitor's
# last search stays in the server's memory until the session expires (ui.settings.SESSION_MINUTES).
KEPT_QUALITY = 92


@dataclass
class UIResult:
    """What one search shows and what a session keeps of it: the query as searched (compressed), the result, and
    the gallery's items."""

    photo: bytes  # the query as searched, as a JPEG (`query` decodes it)
    result: SearchResult
    gallery: list[tuple[str, str]] = field(default_factory=list)
    category: str | None = None  # the category searched, in the shop's spelling (None: all)
    colour: str | None = None  # the colour the products were narrowed to, in the shop's spelling (None: all)
    autocropped: bool | None = None  # auto-crop asked for: whether it trimmed anything (None: not asked)
    like: int | None = None  # "more like this": the gallery image searched, its product left out of the results
    like_name: str = ""
    garments: list[Garment] = field(default_factory=list)  # the garments of the photo (`whole`), found first
    garment: str | None = None  # the kind of garment searched alone, on its region of `whole` (None: all of it)
    source: bytes | None = None  # with `garment`: the whole photo's JPEG (else it is `photo`)

    @classmethod
    def of(cls, query: Image.Image, result: SearchResult, gallery: list[tuple[str, str]],
           category: str | None = None, photo: bytes | None = None, **fields: Any) -> "UIResult":
        """`photo`: the query's JPEG when it was decoded from one kept before (a search refined), kept as it is."""
        return cls(photo or jpeg(query), result, gallery, category, **fields)

    @property
    def whole(self) -> bytes:
        """The photo the garments are regions of: the one searched, or the one a garment was cut from."""
        return self.source or self.photo

    @property
    def shown_garment(self) -> str | None:
        """The garment the results are of: the one searched alone, else the one the whole photo's search found."""
        return self.garment or next((g.kind for g in self.garments if g.found), None)

    @property
    def query(self) -> Image.Image:
        """The query photo, decoded anew (the session keeps only its JPEG)."""
        return Image.open(io.BytesIO(self.photo)).convert("RGB")

    @property
    def confident(self) -> bool:
        """Whether the best product is likely the query's."""
        return bool(self.result.matches) and likely(self.result.matches[0].confidence)

    @property
    def summary(self) -> str:
        t = self.result.timings
        n = len(self.result.matches)
        if n == 0:
            return "No matches (is the category empty?)."
        w, h = self.result.query_size
        cropped = {None: "", True: " (auto-cropped)", False: " (auto-crop found no plain background to trim)"}
        if self.garment:
            cropped[None] = f" (the {KIND_NAMES[self.garment].lower()} of your photo)"
        timing = (f"{n} products for a {w}×{h} photo{cropped[self.autocropped]} · search "
                  f"{t.get('total_ms', 0):.0f} ms (encode {t.get('encode_ms', 0):.0f}, re-rank "
                  f"{t.get('rerank_ms', 0):.0f}, explain {t.get('explain_ms', 0):.0f})")
        if self.like is not None:  # not the same product by design: "no confident match" would mislead
            return f"**More like {self.like_name}**: the shop's closest other products.\n\n{timing}"
        matches = self.result.matches
        first, second = matches[0], matches[1] if n > 1 else None
        if (first.close_to_next and second is not None and first.confidence is not None
                and first.confidence + second.confidence >= CONFIDENT):
            # two products share the belief: name both rather than call either likely
            return (f"**{product_name(first)} or {product_name(second)}?** They look about as likely "
                    f"({first.confidence:.0%} and {second.confidence:.0%}); compare them below.\n\n{timing}")
        if not self.confident:
            return ("**No confident match**: this shop may not sell this product (or the photo shows too little of "
                    f"it). The closest products are below.\n\n{timing}")
        return timing


def jpeg(image: Image.Image) -> bytes:
    """What a session keeps of a photo (KEPT_QUALITY)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=KEPT_QUALITY)
    return buf.getvalue()


def garments_view(ui: UIResult, max_side: int = 240) -> Image.Image | None:
    """The whole photo with its garments outlined, the one the results are of in red, the other in grey (None
    when the photo shows one garment)."""
    if len(ui.garments) < 2:
        return None
    from PIL import ImageDraw

    img = _fit(Image.open(io.BytesIO(ui.whole)).convert("RGB"), max_side)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for g in sorted(ui.garments, key=lambda g: g.kind == ui.shown_garment):  # the shown one drawn last, on top
        x0, y0, x1, y1 = g.box
        shown = g.kind == ui.shown_garment
        draw.rectangle([x0 * w, y0 * h, x1 * w - 1, y1 * h - 1], outline="#d62728" if shown else "#9a9a9a",
                       width=3 if shown else 2)
        _paste_text(img, (x0 * w + 4, y0 * h + 3), g.name, "#d62728" if shown else "#555555")
    return img


def product_name(m: Match) -> str:
    """What a shopper calls the match: its product name, else its category."""
    return item_name({"meta": m.metadata, "category": m.category})


def item_name(item: dict) -> str:
    """A gallery item's product name as a shopper reads it, else its category."""
    return html.unescape(str(item.get("meta", {}).get("product_name") or item.get("category") or "product"))


def colour(m: Match) -> str:
    """The colour of the photo the card shows: the product's photo nearest the query's colour (mga.colour), else
    the photo that matched."""
    return m.shown_colour if m.shown_colour is not None else colour_name(m.metadata)


def shown_index(m: Match) -> int:
    """The image the card shows (Match.shown_index), else the one that matched."""
    return m.shown_index if m.shown_index is not None else m.index


def colours_text(m: Match) -> str:
    """The card's colour and the others the product comes in ("Blue · also Yellow, Red"); where the product does
    not come in the query's colour, that is said ("Yellow, not your colour · also Red")."""
    shown = colour(m)
    if not shown:
        return ""
    text = f"{shown}, not your colour" if m.in_query_colour is False else shown
    return text + (f" · also {', '.join(m.other_colours)}" if m.other_colours else "")


def caption(m: Match) -> str:
    """Name, colours and confidence: no ids, paths or internal fields."""
    sure = f"{m.confidence:.0%}" if m.confidence is not None else f"score {m.score:.2f}"
    return " · ".join(x for x in (product_name(m), colours_text(m), sure) if x)


def shown_details(metadata: dict) -> dict:
    """The metadata a shopper may read (price, gender, material...), without what only the index needs."""
    return {k: v for k, v in metadata.items()
            if v not in ("", None) and k.lower() not in HIDDEN_FIELDS and not k.lower().endswith("id")}


def run_search(loaded: LoadedEngine, image: Any, k: Any = DEFAULT_K, category: str | None = None,
               crop: bool = False, explain: bool = True, colour: str | None = None,
               like: int | None = None, garment: str | None = None, garments: Sequence[Garment] = ()) -> UIResult:
    """Decode (ImageError on bad input), optionally auto-crop, search, and list the gallery items. With `explain`
    each match's score is spread over the query's cells (its heatmaps are drawn when it is opened: match_details).
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


def _fit(img: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    if max(img.size) <= max_side:
        return img
    img = img.copy()
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img


@functools.lru_cache(maxsize=1)
def _chart_font():
    """Loaded once: loading the font took half of each chart's time."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@functools.lru_cache(maxsize=512)
def _text(text: str, fill: str) -> Image.Image:
    """A chart's text drawn once (labels and percentages repeat from chart to chart; drawing text was most of a
    chart's time), RGBA, to paste at its place."""
    from PIL import ImageDraw

    font = _chart_font()
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGBA", (max(1, right), max(1, bottom)), (255, 255, 255, 0))
    ImageDraw.Draw(tile).text((0, 0), text, fill=fill, font=font)
    return tile


def _paste_text(img: Image.Image, xy: tuple[float, float], text: str, fill: str) -> None:
    tile = _text(text, fill)
    img.paste(tile, (int(xy[0]), int(xy[1])), tile)


OVERALL_LOOK = "overall look"  # the global token's terms (mga.explain.OVERALL), as a shopper reads them
WHOLE_MATCH = "whole match"
# A part is named as what decided a match only when its term is this much larger than the next part's and this
# share of the score; otherwise the overall look decided.
STANDS_OUT = 1.5
NAMED_SHARE = 0.08


def term_choices(match: Match) -> list[tuple[str, str]]:
    """What the photos can show of one match, (label, value) for a radio: the whole score, the overall look, each
    part by its name on this match's kind of garment."""
    return [(WHOLE_MATCH, WHOLE), (OVERALL_LOOK, OVERALL)] + [(n, str(k)) for k, n in enumerate(match.part_names)]


def bar_chart(match: Match, shown: str = WHOLE, width: int = 420, row: int = 26) -> Image.Image:
    """Horizontal bars of what each term contributed to the score (the overall look, then each part by name),
    drawn with PIL (a matplotlib figure per click would cost more than the search). The term the photos show is
    drawn in colour, the others grey; all of them in colour when they show the whole match."""
    from PIL import ImageDraw

    vals = [match.global_contribution + match.anchor_contribution, *match.contributions]
    labels = [OVERALL_LOOK, *match.part_names]
    keys = [OVERALL, *(str(k) for k in range(len(match.contributions)))]
    font = _chart_font()
    left, right, top = 12 + int(max(font.getlength(lab) for lab in labels)), 60, 10  # names fit beside their bars
    img = Image.new("RGB", (width, top * 2 + row * len(vals) + 18), "white")
    d = ImageDraw.Draw(img)
    lo, hi = min(0.0, *vals), max(0.0, *vals)
    span = (hi - lo) or 1.0
    x = lambda v: left + (v - lo) / span * (width - left - right)  # noqa: E731
    for i, (v, lab, key) in enumerate(zip(vals, labels, keys)):
        y = top + i * row
        color = "#d62728" if v < 0 else "#1f77b4"
        d.rectangle([min(x(0), x(v)), y + 4, max(x(0), x(v)), y + row - 4],
                    fill=color if shown in (WHOLE, key) else "#c8c8c8")
        _paste_text(img, (6, y + 5), lab, "black")
        _paste_text(img, (max(x(0), x(v)) + 4, y + 5), f"{v / (match.score or 1):.0%}", "#333333")
    d.line([x(0), top, x(0), top + row * len(vals)], fill="black", width=1)
    _paste_text(img, (left, img.height - 20), "share of the match's score", "#555555")
    return img


def what_decided(match: Match, confident: bool, on_skin: Sequence[float] | None = None) -> str:
    """One line on what drove the match, in words that hold: a part is named only when the shop sells what the
    photo shows (a confident match), one part's term stands out, and that part lies on the garment, not on skin
    (`on_skin`: each query part's share of its attention on skin, SearchResult.parts_on_skin); else the overall
    look decided."""
    if not confident:
        return "Not sure this is a product the shop sells, so no detail is named."
    parts = sorted(zip(match.contributions, match.part_names, range(len(match.contributions))), reverse=True)
    overall = (match.global_contribution + match.anchor_contribution) / (match.score or 1)
    if parts and parts[0][0] >= NAMED_SHARE * match.score and (
            len(parts) == 1 or parts[0][0] >= STANDS_OUT * max(parts[1][0], 0)):
        if on_skin is not None and on_skin[parts[0][2]] >= ON_SKIN:
            return (f"The part that stood out lies on skin, not on the garment, so no detail is named: the overall "
                    f"look carried {overall:.0%} of the score.")
        return (f"The overall look carried {overall:.0%} of the score; the detail that stood out: "
                f"**{parts[0][1]}** ({parts[0][0] / match.score:.0%}).")
    return f"No single detail stood out: the overall look decided ({overall:.0%} of the score)."


def outline(img: Image.Image, box: Sequence[float], color: str = "#00c853") -> Image.Image:
    """`img` with the zoom window `box` (fractions of the image) drawn as a rectangle."""
    from PIL import ImageDraw

    img = img.copy()
    w, h = img.size
    width = max(2, round(max(w, h) / 200))
    ImageDraw.Draw(img).rectangle([box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1], outline=color, width=width)
    return img


def match_overlay(loaded: LoadedEngine, ui: UIResult, match: Match, term: str = WHOLE,
                  heat: bool = True) -> Image.Image:
    """The match's photo at display size, the view that matched outlined when it is a close-up, with the heatmap
    of `term` overlaid (`heat`: the first time per match, that view is encoded once more for its cells)."""
    try:
        img = _fit(loaded.engine.gallery_image(match.index, original=True))
        heatmap = loaded.engine.match_heatmap(match, ui.result.query_global, term, HEATMAP_SIDE) if heat else None
    except (GalleryFileError, ImageError):  # the original is gone: its thumbnail, as the results show it
        img, heatmap = _fit(loaded.engine.gallery_image(match.index)), None
    out = overlay(img, heatmap) if heatmap is not None else img
    return outline(out, match.box) if tuple(match.box) != FULL_BOX else out


def match_details(loaded: LoadedEngine, ui: UIResult, match: Match, term: str = WHOLE,
                  match_side: bool = True) -> dict[str, Any]:
    """Everything the details panel shows for one match: markdown, the query and the match with the heatmap of
    `term` (mga.explain: the whole score, the overall look or a part) overlaid at display size, and the chart of
    every term's share. Without `match_side` the match's photo comes without its heatmap (match_overlay adds it:
    the one forward that opening a match costs)."""
    query = ui.query
    q = _fit(query)
    q_heat = loaded.engine.query_heatmap(match, query.size, term, HEATMAP_SIDE)
    meta = ", ".join(f"{k}: {v}" for k, v in shown_details(match.metadata).items())
    sure = (f"**{match.confidence:.0%}** likely the same product" if match.confidence is not None
            else f"**Score** {match.score:.3f}")
    md = (f"### #{match.rank} · {product_name(match)}\n"
          f"{sure} · {match.category or '—'}"
          + (f" · {colour(match)}" if colour(match) else "")
          + (f" · {match.photos} photos in the shop" if match.photos > 1 else "")
          + f"\n\n{what_decided(match, likely(match.confidence), ui.result.parts_on_skin)}"
          + (" Matched through a close-up of the outlined region." if tuple(match.box) != FULL_BOX else "")
          + (f"\n\n{meta}" if meta else ""))
    return {"markdown": md, "query_overlay": overlay(q, q_heat) if q_heat is not None else q,
            "match_overlay": match_overlay(loaded, ui, match, term, heat=match_side),
            "chart": bar_chart(match, term)}


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
