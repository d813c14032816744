"""What users see: a SearchResult as gallery items, a match's overlays and part chart, and the API's JSON."""
from __future__ import annotations

import functools
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mga.confidence import CONFIDENT
from mga.explain import overlay
from mga.imageio import ImageError
from mga.index import GalleryFileError
from mga.matches import Match, SearchResult
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

    @classmethod
    def of(cls, query: Image.Image, result: SearchResult, gallery: list[tuple[str, str]]) -> "UIResult":
        buf = io.BytesIO()
        query.save(buf, "JPEG", quality=KEPT_QUALITY)
        return cls(buf.getvalue(), result, gallery)

    @property
    def query(self) -> Image.Image:
        """The query photo, decoded anew (the session keeps only its JPEG)."""
        return Image.open(io.BytesIO(self.photo)).convert("RGB")

    @property
    def confident(self) -> bool:
        """Whether the best product is likely the query's (always, for weights without a calibration)."""
        best = self.result.matches[0].confidence if self.result.matches else 0.0
        return best is None or best >= CONFIDENT

    @property
    def summary(self) -> str:
        t = self.result.timings
        n = len(self.result.matches)
        if n == 0:
            return "No matches (is the category empty?)."
        w, h = self.result.query_size
        timing = (f"{n} products for a {w}×{h} photo · search "
                  f"{t.get('total_ms', 0):.0f} ms (encode {t.get('encode_ms', 0):.0f}, re-rank "
                  f"{t.get('rerank_ms', 0):.0f}, explain {t.get('explain_ms', 0):.0f})")
        if not self.confident:
            return ("**No confident match**: this shop may not sell this product (or the photo shows too little of "
                    f"it). The closest products are below.\n\n{timing}")
        return timing


def product_name(m: Match) -> str:
    """What a shopper calls the match: its product name, else its category."""
    return html.unescape(str(m.metadata.get("product_name") or m.category or "product"))


def colour(m: Match) -> str:
    return str(m.metadata.get("color") or "")


def caption(m: Match) -> str:
    """Name, colour and confidence: no ids, paths or internal fields."""
    sure = f"{m.confidence:.0%}" if m.confidence is not None else f"score {m.score:.2f}"
    return " · ".join(x for x in (product_name(m), colour(m), sure) if x)


def shown_details(metadata: dict) -> dict:
    """The metadata a shopper may read (price, gender, material...), without what only the index needs."""
    return {k: v for k, v in metadata.items()
            if v not in ("", None) and k.lower() not in HIDDEN_FIELDS and not k.lower().endswith("id")}


def run_search(loaded: LoadedEngine, image: Any, k: Any = DEFAULT_K, category: str | None = None,
               crop: bool = False, explain: bool = True, heatmap_max_side: int = HEATMAP_SIDE) -> UIResult:
    """Decode (ImageError on bad input), optionally auto-crop, search, and list the gallery items."""
    k_int = parse_k(k)
    cat = parse_category(category, loaded.engine.categories)
    img = decode_query(image)
    if crop:
        img = autocrop(img)
    res = loaded.engine.search(img, k=k_int, category=cat, explain=explain, heatmap_max_side=heatmap_max_side,
                               products=True, heatmaps=False)  # one is shown at a time: match_details
    return UIResult.of(img, res, gallery_items(loaded, res))


def gallery_items(loaded: LoadedEngine, res: SearchResult) -> list[tuple[str, str]]:
    """The results' photos (app copies) and captions. A photo the gallery no longer has (or never could serve)
    leaves its result out, said in the log: one bad file must not fail every search that would show it."""
    items, kept = [], []
    for m in res.matches:
        try:
            items.append((loaded.files.display(m.index), caption(m)))
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


def bar_chart(values: Sequence[float], names: Sequence[str], global_contribution: float | None = None,
              anchor_contribution: float = 0.0, width: int = 420, row: int = 26) -> Image.Image:
    """Horizontal bars of the per-part contributions (and the global term, and the pretrained backbone's where
    the model has an anchor), drawn with PIL: a matplotlib figure per click would cost more than the search."""
    from PIL import ImageDraw

    vals, labels = [float(v) for v in values], list(names)
    if global_contribution is not None:
        vals, labels = [float(global_contribution)] + vals, ["global"] + labels
    if anchor_contribution:
        vals, labels = [float(anchor_contribution)] + vals, ["pretrained look"] + labels
    font = _chart_font()
    left, right, top = 12 + int(max(font.getlength(lab) for lab in labels)), 60, 10  # names fit beside their bars
    img = Image.new("RGB", (width, top * 2 + row * len(vals) + 18), "white")
    d = ImageDraw.Draw(img)
    lo, hi = min(0.0, *vals), max(0.0, *vals)
    span = (hi - lo) or 1.0
    x = lambda v: left + (v - lo) / span * (width - left - right)  # noqa: E731
    for i, (v, lab) in enumerate(zip(vals, labels)):
        y = top + i * row
        color = "#9e9e9e" if lab in ("global", "pretrained look") else ("#d62728" if v < 0 else "#1f77b4")
        d.rectangle([min(x(0), x(v)), y + 4, max(x(0), x(v)), y + row - 4], fill=color)
        d.text((6, y + 5), lab, fill="black", font=font)
        d.text((max(x(0), x(v)) + 4, y + 5), f"{v:+.3f}", fill="#333333", font=font)
    d.line([x(0), top, x(0), top + row * len(vals)], fill="black", width=1)
    d.text((left, img.height - 20), "contribution to the score", fill="#555555", font=font)
    return img


def outline(img: Image.Image, box: Sequence[float], color: str = "#00c853") -> Image.Image:
    """`img` with the zoom window `box` (fractions of the image) drawn as a rectangle."""
    from PIL import ImageDraw

    img = img.copy()
    w, h = img.size
    width = max(2, round(max(w, h) / 200))
    ImageDraw.Draw(img).rectangle([box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1], outline=color, width=width)
    return img


def match_details(loaded: LoadedEngine, query: Image.Image, match: Match) -> dict[str, Any]:
    """Everything the details panel shows for one match: markdown, the query and the match with their heatmaps
    overlaid (at display size), and the per-part contribution chart."""
    loaded.engine.match_heatmap(match, HEATMAP_SIDE)
    q = _fit(query)
    q_heat = loaded.engine.query_heatmap(match, query.size, HEATMAP_SIDE)
    q_over = overlay(q, q_heat) if q_heat is not None else q
    try:
        m_img = _fit(loaded.engine.gallery_image(match.index, original=True))
    except (GalleryFileError, ImageError):  # the original is gone: its thumbnail, as the results show it
        m_img = _fit(loaded.engine.gallery_image(match.index))
    m_over = overlay(m_img, match.match_heatmap) if match.match_heatmap is not None else m_img
    zoomed = tuple(match.box) != FULL_BOX
    if zoomed:
        m_over = outline(m_over, match.box)
    names = match.part_names
    chart = bar_chart(match.contributions, names, global_contribution=match.global_contribution,
                      anchor_contribution=match.anchor_contribution)
    top = int(np.argmax(match.contributions)) if match.contributions else None
    meta = ", ".join(f"{k}: {v}" for k, v in shown_details(match.metadata).items())
    sure = (f"**{match.confidence:.0%}** likely the same product" if match.confidence is not None
            else f"**Score** {match.score:.3f}")
    md = (f"### #{match.rank} · {product_name(match)}\n"
          f"{sure} · {match.category or '—'}"
          + (f" · {colour(match)}" if colour(match) else "")
          + (f" · {match.photos} photos in the shop" if match.photos > 1 else "")
          + (f"\n\nStrongest part: **{names[top]}**" if top is not None else "")
          + (" · matched through a close-up of the outlined region" if zoomed else "")
          + (f"\n\n{meta}" if meta else ""))
    return {"markdown": md, "query_overlay": q_over, "match_overlay": m_over, "chart": chart}


def api_payload(ui: UIResult, category: str | None, weights_label: str) -> dict[str, Any]:
    """The /search API's JSON: ranked products (each with a URL of its photo, relative to the app's address)
    plus what produced them."""
    results = [{**m.to_dict(), "product_name": product_name(m), "color": colour(m),
                "url": gallery_url(m.index, m.image)} for m in ui.result.matches]
    return {
        "results": results,
        "confident": ui.confident,
        "k": len(ui.result.matches),
        "category": category or ALL_CATEGORIES,
        "query_size": list(ui.result.query_size),
        "whole_garment": ui.result.whole_garment,  # searched among whole photos only (not a close-up)
        "timings_ms": {k: round(v, 2) for k, v in ui.result.timings.items()},
        "weights": weights_label,
    }
