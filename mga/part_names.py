"""What a search calls each part: the names stored with the weights (MGAConfig.part_names, read off where each
part sits on the training photos: training.parts) for a match's category, or its kind's for a category training
did not see."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .data import category_key

KIND_KEY = "*{}"  # the key of a kind's names ("*top", "*bottom"): for categories training did not see


BOTTOMS = ("pants", "shorts", "skirt", "skirts", "trousers", "jeans", "leggings", "denim")


NOT_GARMENTS = ("hat", "hats", "cap", "caps", "shoe", "shoes", "sneakers", "boots", "bag", "bags", "accessories")


def garment_kind(category: str) -> str:
    """"bottom" for garments worn on the legs, "other" for what is no garment (a hat, shoes), else "top": the
    kinds ANCHORS names parts by, and one it does not."""
    words = category_key(category).split()
    if any(w in NOT_GARMENTS for w in words):
        return "other"
    return "bottom" if any(w in BOTTOMS for w in words) else "top"


def names_for(part_names: Mapping[str, Sequence[str]] | None, category: str | None, num_parts: int) -> list[str]:
    """The names of the parts on a category's garments; for a category training did not see, its kind's names;
    without a category (or names), "part k"."""
    table = part_names or {}
    keys = [category_key(category), KIND_KEY.format(garment_kind(category))] if category else []
    for key in keys:
        if key in table and len(table[key]) == num_parts:
            return list(table[key])
    return [f"part {k + 1}" for k in range(num_parts)]


MAX_NAME = 80  # characters in one part's name: the app shows it in a chart and a line of text


def check_names(part_names: Any, num_parts: int) -> None:
    """Refuse stored part names (MGAConfig.part_names) that `names_for` would have to pass over or that the app
    could not show: an object of category keys, each a list of exactly `num_parts` names, each a string of 1 to
    MAX_NAME characters. Raises ValueError naming the entry."""
    field = "MGAConfig.part_names"
    if not isinstance(part_names, dict):
        raise ValueError(f"{field} must be a JSON object, not a {type(part_names).__name__}")
    for key, row in part_names.items():
        where = f"{field}[{str(key)[:40]!r}]"
        if not isinstance(row, list) or len(row) != num_parts:
            size = f"has {len(row)} names" if isinstance(row, list) else f"is a {type(row).__name__}"
            raise ValueError(f"{where} {size}; it must list {num_parts} names, one per part (num_parts)")
        for k, name in enumerate(row):
            if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
                raise ValueError(f"{where}[{k}] = {str(name)[:40]!r}: must be a name of 1 to {MAX_NAME} characters")
