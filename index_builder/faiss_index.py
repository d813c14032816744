"""FAISS index types for coarse embeddings (inner product on unit vectors), chosen by gallery size."""
from __future__ import annotations

import math
import sys

import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
FLAT_MAX = 50_000  # below this, exact search is fast enough (a few ms per query)
# Above FLAT_MAX `auto` is IVF-PQ: 64-byte codes (memory-mapped lists), its candidates re-scored exactly from the
# stored tokens. HNSW (on request) keeps every coarse embedding again in float32 (8.7 kB a view with the anchor,
# seven times what the tokens take in 4 bits) and its graph in memory: faster and of higher recall, not smaller.
IVFPQ_MIN = 10_000  # PQ training needs data
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE = 32
IVF_REFINE = 4  # PQ scores are approximate: fetch 4x the candidates, then re-score them exactly


def choose_index_type(n: int, requested: str = "auto") -> str:
    if requested not in INDEX_TYPES:
        raise ValueError(f"index type {requested!r}: use one of {INDEX_TYPES}")
    if requested == "auto":
        requested = "flat" if n < FLAT_MAX else "ivfpq"
    if requested == "ivfpq" and n < IVFPQ_MIN:
        print(f"note: {n} vectors are too few to train IVF-PQ; using an exact flat index", file=sys.stderr)
        return "flat"
    return requested


def _pq_m(d: int) -> int:
    for m in (64, 56, 48, 32, 28, 16, 8, 4, 2, 1):
        if d % m == 0 and m <= d:
            return m
    return 1


def build_faiss(emb: np.ndarray, index_type: str, progress: bool = False, block: int = 65536,
                nlist: int | None = None):
    """An approximate inner-product FAISS index (hnsw or ivfpq) over `emb` (N, E) float32 (may be a memory map);
    returns (index, params) where params (type, ef_search, nprobe ...) go into the manifest and are applied at
    search time. An exact flat index is not stored: mga.index.GalleryIndex builds it from the stored tokens.
    `nlist`: IVF lists (default 4 sqrt(N); fewer train faster, bench.scaling)."""
    import faiss

    n, d = emb.shape
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params = {"type": "hnsw", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    elif index_type == "ivfpq":
        nlist = nlist or max(16, min(65536, int(4 * math.sqrt(n))))
        m = _pq_m(d)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, max(256 * 40, nlist * 40)), replace=False))
        index.train(np.ascontiguousarray(emb[sample], dtype=np.float32))
        index.nprobe = IVF_NPROBE
        params = {"type": "ivfpq", "nlist": nlist, "pq_m": m, "nprobe": IVF_NPROBE, "refine": IVF_REFINE}
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    for s in range(0, n, block):
        index.add(np.ascontiguousarray(emb[s:s + block], dtype=np.float32))
        if progress and n > block:
            print(f"faiss {index_type}: {min(n, s + block)}/{n}", file=sys.stderr)
    return index, params
