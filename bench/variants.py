"""The rows a study prints per model: one for each gallery-view policy and vote weights asked for."""
from __future__ import annotations

import argparse
from typing import NamedTuple, Sequence

from mga.closeup import VIEWS
from mga.config import CATEGORY_VOTE, DEFAULT_VIEWS, PRODUCT_VOTE


class Variant(NamedTuple):
    views: str
    vote: float  # the category vote's weight
    product_vote: float


def add_variant_arguments(p: argparse.ArgumentParser) -> None:
    """--views, --category-vote and --product-vote, each taking several values: `variants` makes a row of each
    combination."""
    p.add_argument("--views", choices=VIEWS, nargs="+", default=[DEFAULT_VIEWS],
                   help="gallery views a query sees: every view (all), zoom windows for close-ups only (auto), "
                        "full photos; several: a row for each")
    p.add_argument("--category-vote", type=float, nargs="+", default=[CATEGORY_VOTE],
                   help="weight of the vote on the query's kind of garment (mga.category_vote; 0: off); several: a "
                        "row for each")
    p.add_argument("--product-vote", type=float, nargs="+", default=[PRODUCT_VOTE],
                   help="weight of the vote on products (mga.category_vote; 0: off); several: a row for each")


def variants(label: str, views: Sequence[str], votes: Sequence[float],
             product_votes: Sequence[float] = (PRODUCT_VOTE,)) -> dict[str, Variant]:
    """Row name -> Variant; the name says only what varies."""
    rows = {}
    for chosen in views:
        for vote in votes:
            for product_vote in product_votes:
                extra = ([f"views {chosen}"] if len(views) > 1 else []) + \
                        ([f"vote {vote:g}"] if len(votes) > 1 else []) + \
                        ([f"product vote {product_vote:g}"] if len(product_votes) > 1 else [])
                rows[f"{label} ({', '.join(extra)})" if extra else label] = Variant(chosen, vote, product_vote)
    return rows
