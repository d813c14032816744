"""What a gallery of millions costs: bytes per photo against R@1, and FAISS index types at 1M vectors.

    python -m bench.scaling rows --data ../shared/data/luma-inshop [--weights DIR] [--json out.json]
    python -m bench.scaling ann [--n 1000000] [--queries 200] [--json out.json]

`rows`: the Luma test split searched the app's way (coarse top 100, then ATA) with the gallery stored in smaller
forms: full photos only or fewer zoom windows; the tokens in float8 (e4m3, one scale per vector) instead of
float16; the coarse embedding (global and part tokens concatenated, mga.model.coarse_embedding) rebuilt from the
stored tokens instead of stored as float32; the coarse embedding as 64-byte PQ codes (trained on the training
split's views). Prints bytes per gallery photo and R@1 / R@10 of each, with ATA re-ranking the coarse top 100 (the
app's way; on this 183-photo gallery that is most of it) and of the coarse stage alone (what chooses ATA's
candidates in a large gallery).

`ann`: N synthetic coarse embeddings with the spectrum of real ones (a Gaussian fitted to the demo index's rows,
unit-normalised), indexed as the builder does (exact flat, HNSW, IVF-PQ with exact re-scoring): build time,
memory, latency of one query (1 and all threads) and recall@10 of the approximate indexes against exact search.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mga.config import DEFAULT_INDEX_DIR, DEFAULT_RERANK_TOP  # noqa: E402
from mga.data import load_retrieval_data  # noqa: E402
from mga.evaluate import encode_gallery, encode_records, recall  # noqa: E402
from mga.hub import load_model  # noqa: E402
from mga.index import EMBEDDINGS, ITEMS  # noqa: E402
from mga.model import Encoding, coarse_embedding  # noqa: E402
from mga.views import ZoomViews  # noqa: E402

PQ_BYTES = 64
ROW_EXTRA = 16 + 8  # a view's box (4 float32) and owner (int64)


def float8(x: torch.Tensor) -> torch.Tensor:
    """x through float8 e4m3 with one scale per vector (the last dimension), as a compact index would store it."""
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 448  # e4m3's largest value
    return (x / scale).to(torch.float8_e4m3fn).float() * scale


def pq_codec(train: np.ndarray):
    import faiss

    pq = faiss.ProductQuantizer(train.shape[1], PQ_BYTES, 8)
    pq.train(np.ascontiguousarray(train, dtype=np.float32))
    return lambda x: torch.from_numpy(pq.decode(pq.compute_codes(np.ascontiguousarray(x.numpy(), np.float32))))


def stored(g: Encoding, tokens: str, coarse: str, alpha: float, pq=None) -> tuple[Encoding, int]:
    """`g` as a search over a stored index sees it, and the bytes per view of that index (heatmaps included
    as float16 in every form: the app shows them)."""
    round_trip = {"float16": lambda t: t.half().float(), "float8": float8}[tokens]
    glob, parts = round_trip(g.global_.float()), round_trip(g.parts.float())
    token_bytes = {"float16": 2, "float8": 1}[tokens] * (glob[0].numel() + parts[0].numel()) \
        + (0 if tokens == "float16" else 2 * (1 + parts.shape[1]))  # float8: a float16 scale per vector
    if coarse == "float32":
        emb, coarse_bytes = g.embedding.float(), 4 * g.embedding.shape[1]
    elif coarse == "rebuilt":
        emb, coarse_bytes = coarse_embedding(glob, parts, alpha), 0
    else:
        emb, coarse_bytes = pq(g.embedding.float()), PQ_BYTES
    return Encoding(glob, parts, g.attn, emb), coarse_bytes + token_bytes + 2 * g.attn[0].numel() + ROW_EXTRA


def rows(args: argparse.Namespace) -> dict:
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    alpha = model.config.alpha
    q = encode_records(model, data.root, data.query, desc="queries")
    train, _ = encode_gallery(model, data.root, data.train, ZoomViews(), desc="train views (PQ)")
    pq = pq_codec(train.embedding.float().numpy())
    items = DEFAULT_INDEX_DIR / ITEMS  # an item line's bytes, measured on the demo index
    item_bytes = items.stat().st_size / len(items.read_text(encoding="utf-8").splitlines())
    forms = [("float32 coarse + float16 tokens (today)", "float16", "float32"),
             ("float16 tokens, coarse rebuilt from them", "float16", "rebuilt"),
             ("float8 tokens, coarse rebuilt from them", "float8", "rebuilt"),
             ("PQ-64 coarse + float16 tokens", "float16", "pq"),
             ("PQ-64 coarse + float8 tokens", "float8", "pq")]
    results = {}
    for grid in args.grids:
        g, owner = encode_gallery(model, data.root, data.gallery, replace(ZoomViews(), grid=grid))
        views = len(g) / len(data.gallery)
        for name, tokens, coarse in forms:
            enc, per_view = stored(g, tokens, coarse, alpha, pq)
            r = recall(model, data, q, enc, owner, DEFAULT_RERANK_TOP)
            coarse = recall(model, data, q, enc, owner, 0)  # the coarse stage alone: what picks ATA's candidates
            key = f"zoom grid {grid}: {name}"
            results[key] = {"views_per_photo": round(views, 2), "bytes_per_view": per_view,
                            "bytes_per_photo": round(views * per_view + item_bytes), "R@1": r["R@1"],
                            "R@10": r["R@10"], "coarse R@1": coarse["R@1"], "coarse R@10": coarse["R@10"]}
            print(f"{key}: {views:.1f} views/photo, {per_view} B/view, {views * per_view / 1024:.1f} kB/photo, "
                  f"R@1 {r['R@1']:.3f}, R@10 {r['R@10']:.3f}, coarse alone R@1 {coarse['R@1']:.3f}, "
                  f"R@10 {coarse['R@10']:.3f}", flush=True)
    return results


def synthetic_rows(n: int, seed: int = 0, block: int = 100_000) -> np.ndarray:
    """n unit vectors from a Gaussian fitted to the demo index's coarse embeddings (mean and covariance)."""
    real = np.load(DEFAULT_INDEX_DIR / EMBEDDINGS).astype(np.float64)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    basis = (vecs * np.sqrt(np.clip(vals, 0, None))).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for s in range(0, n, block):
        z = rng.standard_normal((min(block, n - s), real.shape[1]), dtype=np.float32)
        x = z @ basis.T + mean.astype(np.float32)
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def top10(index, kind: str, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The 10 nearest rows of each query as the engine finds them (mga.coarse): IVF-PQ fetches IVF_REFINE x
    the candidates from its codes and re-scores them on the stored rows."""
    from index_builder.faiss_index import IVF_REFINE

    if kind != "ivfpq":
        return index.search(queries, 10)[1]
    cand = index.search(queries, 10 * IVF_REFINE)[1]
    return np.stack([c[np.argsort(-(rows[c] @ x))[:10]] for c, x in zip(cand, queries)])


def query_ms(index, kind: str, rows: np.ndarray, queries: np.ndarray, threads: int) -> float:
    """Mean milliseconds of one query searched alone (as the app searches), with `threads` OpenMP threads."""
    import faiss

    faiss.omp_set_num_threads(threads)
    top10(index, kind, rows, queries[:5])  # warm-up
    t = time.perf_counter()
    for x in queries:
        top10(index, kind, rows, x[None])
    return round(1000 * (time.perf_counter() - t) / len(queries), 3)


def measured(index, kind: str, rows: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """recall@10 against exact search, and one query's latency with 1 and with every thread."""
    found = top10(index, kind, rows, queries)
    hits = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    cores = os.cpu_count() or 1
    return {"recall@10": round(float(hits), 3), "ms_1_thread": query_ms(index, kind, rows, queries, 1),
            "ms_all_threads": query_ms(index, kind, rows, queries, cores)}


def ann(args: argparse.Namespace) -> dict:
    import faiss

    from index_builder.faiss_index import build_faiss

    cores = os.cpu_count() or 1
    x = synthetic_rows(args.n)
    q = synthetic_rows(args.queries, seed=1)
    print(f"{args.n} synthetic rows of {x.shape[1]} float32 ({x.nbytes / 2**30:.2f} GiB), {cores} cores", flush=True)
    results = {"n": args.n, "dim": x.shape[1], "cores": cores}
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    truth = top10(exact, "flat", x, q)
    results["flat"] = {"memory_bytes": x.nbytes, "build_s": 0.0, **measured(exact, "flat", x, q, truth)}
    print("flat", json.dumps(results["flat"]), flush=True)
    del exact
    for kind in args.kinds:
        t = time.perf_counter()
        index, params = build_faiss(x, kind, nlist=args.nlist)
        build_s = time.perf_counter() - t
        results[kind] = {"params": params, "memory_bytes": faiss.serialize_index(index).nbytes,
                         "build_s": round(build_s, 1), **measured(index, kind, x, q, truth)}
        print(kind, json.dumps(results[kind]), flush=True)
        for nprobe in args.nprobe if kind == "ivfpq" else ():  # the search-time knob, on the same index
            index.nprobe = nprobe
            results[f"ivfpq, nprobe {nprobe}"] = measured(index, kind, x, q, truth)
            print(f"ivfpq, nprobe {nprobe}", json.dumps(results[f"ivfpq, nprobe {nprobe}"]), flush=True)
        del index
    return results


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rows", help="bytes per photo against R@1 on the Luma test split")
    r.add_argument("--data", required=True)
    r.add_argument("--weights")
    r.add_argument("--grids", type=int, nargs="+", default=[0, 2, ZoomViews().grid], help="zoom grids to compare")
    a = sub.add_parser("ann", help="flat, HNSW and IVF-PQ over N synthetic rows")
    a.add_argument("--n", type=int, default=1_000_000)
    a.add_argument("--queries", type=int, default=200)
    a.add_argument("--nlist", type=int, help="IVF lists (default: the builder's, 4 sqrt(N))")
    a.add_argument("--kinds", nargs="+", choices=("hnsw", "ivfpq"), default=["hnsw", "ivfpq"])
    a.add_argument("--nprobe", type=int, nargs="*", default=[], help="also search IVF-PQ with these nprobe")
    for s in (r, a):
        s.add_argument("--json", help="write the results here")
    args = p.parse_args()
    with torch.inference_mode():
        results = rows(args) if args.cmd == "rows" else ann(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
