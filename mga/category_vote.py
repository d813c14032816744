"""Results of the query's kind of garment first: the best results vote on a category, and each result gains a
share of its category's vote.

A shopper's photo of trousers whose best match is a tank top usually has trousers right behind it: the best results
agree on the kind of garment more often than the #1 alone gets it right, and a shop's results page that mixes kinds
reads as noise. A softmax of the `top` best scores (at `temperature`) spreads one vote over their categories, and
every re-ranked result gains `weight` x the share of its category. All photos of a product share its category, so
the order within a product, and a search already filtered to one category, stay as they were; the scores shown and
the confidence stay the ATA scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import CATEGORY_VOTE, CATEGORY_VOTE_TEMPERATURE, CATEGORY_VOTE_TOP


def category_vote(scores: np.ndarray, categories: Sequence, weight: float = CATEGORY_VOTE,
                  top: int = CATEGORY_VOTE_TOP, temperature: float = CATEGORY_VOTE_TEMPERATURE) -> np.ndarray:
    """`scores` (n,) plus `weight` x the share of the vote of each result's category (any labels, one per score)."""
    scores = np.asarray(scores, dtype=np.float64)
    if weight == 0 or len(scores) == 0:
        return scores
    labels, label_of = np.unique(np.asarray(categories), return_inverse=True)
    best = np.argsort(-scores, kind="stable")[:top]
    votes = np.exp((scores[best] - scores[best[0]]) / temperature)
    share = np.bincount(label_of[best], weights=votes, minlength=len(labels)) / votes.sum()
    return scores + weight * share[label_of]


def vote_order(scores: np.ndarray, categories: Sequence, weight: float = CATEGORY_VOTE) -> np.ndarray:
    """Indices of `scores`, best first after the vote; ties keep their given order."""
    return np.argsort(-category_vote(scores, categories, weight), kind="stable")
