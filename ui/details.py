"""A result opened: its heatmaps on both photos, the chart, and the words on what decided it; and the photo with
its garments outlined, for the garment choice."""
from __future__ import annotations

from typing import Sequence

from PIL import Image

from mga import FULL_BOX, ON_SKIN, WHOLE, GalleryFileError, ImageError, Match, likely, overlay

from .cards import colour, product_name, shown_details
from .chart import bar_chart, paste_text
from .session import UIResult, photo_view
from .settings import LoadedEngine

# Largest side of the images the app shows (overlays): browsers don't need a 6000 px photo.
DISPLAY_MAX_SIDE = 320
# Heatmaps come from a coarse token grid: computing them at 256 px (then resized for display) loses nothing
# visible and keeps "explain" cheap for k results.
HEATMAP_SIDE = 256
# A part is named as what decided a match only when its term is this much larger than the next part's and this
# share of the score; otherwise the overall look decided.
STANDS_OUT = 1.5
NAMED_SHARE = 0.08


def garments_view(ui: UIResult, max_side: int = 240) -> Image.Image | None:
    """The whole photo with its garments outlined, the one the results are of in red, the other in grey (None
    when the photo shows one garment)."""
    if len(ui.garments) < 2:
        return None
    from PIL import ImageDraw

    img = photo_view(ui.whole, max_side)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for g in sorted(ui.garments, key=lambda g: g.kind == ui.shown_garment):  # the shown one drawn last, on top
        x0, y0, x1, y1 = g.box
        shown = g.kind == ui.shown_garment
        draw.rectangle([x0 * w, y0 * h, x1 * w - 1, y1 * h - 1], outline="#d62728" if shown else "#9a9a9a",
                       width=3 if shown else 2)
        paste_text(img, (x0 * w + 4, y0 * h + 3), g.name, "#d62728" if shown else "#555555")
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


def match_overlay(loaded: LoadedEngine, ui: UIResult, match: Match, term: str = WHOLE) -> Image.Image:
    """The match's photo at display size, the view that matched outlined when it is a close-up, with the heatmap
    of `term` overlaid (the first time per match, that view is encoded once more for its cells)."""
    try:
        img = loaded.engine.gallery_image(match.index, original=True, max_side=DISPLAY_MAX_SIDE)
        heatmap = loaded.engine.match_heatmap(ui.result, match, term, HEATMAP_SIDE)
    except (GalleryFileError, ImageError):  # the original is gone: its thumbnail, as the results show it
        img, heatmap = loaded.engine.gallery_image(match.index, max_side=DISPLAY_MAX_SIDE), None
    out = overlay(img, heatmap) if heatmap is not None else img
    return outline(out, match.box) if tuple(match.box) != FULL_BOX else out


def match_markdown(ui: UIResult, match: Match) -> str:
    """The details panel's words on one match: its product, how sure, and what decided it."""
    meta = ", ".join(f"{k}: {v}" for k, v in shown_details(match.metadata).items())
    sure = (f"**{match.confidence:.0%}** likely the same product" if match.confidence is not None
            else f"**Score** {match.score:.3f}")
    return (f"### #{match.rank} · {product_name(match)}\n"
            f"{sure} · {match.category or '—'}"
            + (f" · {colour(match)}" if colour(match) else "")
            + (f" · {match.photos} photos in the shop" if match.photos > 1 else "")
            + f"\n\n{what_decided(match, likely(match.confidence), ui.result.parts_on_skin)}"
            + (" Matched through a close-up of the outlined region." if tuple(match.box) != FULL_BOX else "")
            + (f"\n\n{meta}" if meta else ""))


def match_images(loaded: LoadedEngine, ui: UIResult, match: Match,
                 term: str = WHOLE) -> tuple[Image.Image, Image.Image, Image.Image]:
    """The query and the match with the heatmap of `term` (mga.explain: the whole score, the overall look or a
    part) overlaid at display size, and the chart of every term's share. Both sides are computed the first time
    (the match's costs one forward: match_overlay), so a search shows its results and words first and these right
    after."""
    q = ui.view(DISPLAY_MAX_SIDE)
    # the query's side from the cells its search kept, or from the kept photo once they have gone
    q_heat = loaded.engine.query_heatmap(ui.result, match, term, HEATMAP_SIDE, photo=lambda: ui.query)
    return (overlay(q, q_heat) if q_heat is not None else q, match_overlay(loaded, ui, match, term),
            bar_chart(match, term))
