"""The chart of what each term (the overall look, each part) contributed to a match's score, and the labels of
those terms as a shopper reads them."""
from __future__ import annotations

import functools

from PIL import Image

from mga import OVERALL, WHOLE, Match

OVERALL_LOOK = "overall look"  # the global token's terms (mga.explain.OVERALL), as a shopper reads them
WHOLE_MATCH = "whole match"


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


def paste_text(img: Image.Image, xy: tuple[float, float], text: str, fill: str) -> None:
    """`text` (drawn once: _text) pasted on `img` at `xy`: the chart's labels, and the garments' names on the
    photo that outlines them (ui.details.garments_view)."""
    tile = _text(text, fill)
    img.paste(tile, (int(xy[0]), int(xy[1])), tile)


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
        paste_text(img, (6, y + 5), lab, "black")
        paste_text(img, (max(x(0), x(v)) + 4, y + 5), f"{v / (match.score or 1):.0%}", "#333333")
    d.line([x(0), top, x(0), top + row * len(vals)], fill="black", width=1)
    paste_text(img, (left, img.height - 20), "share of the match's score", "#555555")
    return img
