"""The rows a study prints per model: one for each gallery-view policy and category-vote weight asked for."""
from __future__ import annotations

from typing import Sequence


def variants(label: str, views: Sequence[str], votes: Sequence[float]) -> dict[str, tuple[str, float]]:
    """Row name -> (views, vote weight); the name says only what varies."""
    rows = {}
    for chosen in views:
        for vote in votes:
            extra = ([f"views {chosen}"] if len(views) > 1 else []) + ([f"vote {vote:g}"] if len(votes) > 1 else [])
            rows[f"{label} ({', '.join(extra)})" if extra else label] = (chosen, vote)
    return rows
