"""The rows a study prints per model: one for each gallery-view policy and category-vote weight asked for."""
from __future__ import annotations

import argparse
from typing import Sequence

from mga.closeup import VIEWS
from mga.config import CATEGORY_VOTE, DEFAULT_VIEWS


def add_variant_arguments(p: argparse.ArgumentParser) -> None:
    """--views and --category-vote, each taking several values: `variants` makes a row of each combination."""
    p.add_argument("--views", choices=VIEWS, nargs="+", default=[DEFAULT_VIEWS],
                   help="gallery views a query sees: every view (all), zoom windows for close-ups only (auto), "
                        "full photos; several: a row for each")
    p.add_argument("--category-vote", type=float, nargs="+", default=[CATEGORY_VOTE],
                   help="weight of the vote on the query's kind of garment (mga.category_vote; 0: off); several: a "
                        "row for each")


def variants(label: str, views: Sequence[str], votes: Sequence[float]) -> dict[str, tuple[str, float]]:
    """Row name -> (views, vote weight); the name says only what varies."""
    rows = {}
    for chosen in views:
        for vote in votes:
            extra = ([f"views {chosen}"] if len(views) > 1 else []) + ([f"vote {vote:g}"] if len(votes) > 1 else [])
            rows[f"{label} ({', '.join(extra)})" if extra else label] = (chosen, vote)
    return rows
