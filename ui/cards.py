"""What a result card says: the product's name, its colours and confidence, and the details a shopper may read."""
from __future__ import annotations

import html

from mga import Match, colour_name

# Metadata columns that only the index needs (ids, splits, provenance): never shown to shoppers.
HIDDEN_FIELDS = {"product_name", "color", "view", "evaluation_status", "source", "image_name", "path", "split"}


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
