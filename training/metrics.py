"""Retrieval metrics as pure functions: ranked gallery item ids in, recall@K out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

INSHOP_KS = (1, 5, 10, 20, 30, 40, 50)
CONSUMER2SHOP_KS = (1, 20, 50)


def recall_at_k(ranking: np.ndarray, query_items: Sequence[str], gallery_items: Sequence[str],
                ks: Sequence[int]) -> dict[str, float]:
    """ranking: (Q, >=max(ks)) gallery indices, best first. A query is a hit at K when any of its first K
    results shows the query's item (the DeepFashion protocol). Returns {"R@K": fraction of queries}."""
    gallery = np.asarray(gallery_items)
    hits = gallery[np.asarray(ranking)] == np.asarray(query_items)[:, None]  # (Q, M)
    first = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {f"R@{k}": float((first < k).mean()) for k in ks}
