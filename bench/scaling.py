"""What a gallery of millions costs: bytes per photo against R@1, and FAISS index types at 1M vectors.

    python -m bench.scaling rows --data ../shared/data/luma-inshop [--weights DIR] [--json out.json]
    python -m bench.scaling ann [--n 1000000] [--queries 200] [--json out.json]

`rows`: the Luma test split's gallery indexed by the builder at several zoom grids (0: full photos only), as format
2 stored it (float32 coarse embeddings, float16 tokens and maps) and with each form of format 3's tokens (float16,
int8, int4; the coarse embeddings rebuilt from the tokens), one encoding per grid, searched as the app searches
(coarse top 100, then ATA; and by the coarse stage alone, what chooses ATA's candidates in a large gallery). Prints
bytes per gallery photo (arrays and items.jsonl) and R@1 / R@10 of each, then the table of docs/scaling.md.

A million photos: bench.million.

`ann`: N synthetic coarse embeddings with the spectrum of real ones (a Gaussian fitted to the demo index's rows,
unit-normalised), indexed as the builder does (exact flat, HNSW, IVF-PQ with exact re-scoring): build time,
memory, latency of one query (1 and all threads) and recall@10 of the approximate indexes against exact search.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from index_builder.edit import convert_index  # noqa: E402
from index_builder.writer import disk_bytes  # noqa: E402
from mga.config import DEFAULT_INDEX_DIR, DEFAULT_RERANK_TOP  # noqa: E402
from mga.data import load_retrieval_data  # noqa: E402
from training.evaluate import Shop, encode_records, recall  # noqa: E402
from mga.hub import load_model  # noqa: E402
from mga.index import GalleryIndex  # noqa: E402
from mga.index_format import ATTN, EMBEDDINGS, ITEMS, MANIFEST, OWNER  # noqa: E402
from mga.search import SearchEngine  # noqa: E402
from mga.views import ZoomViews  # noqa: E402

FORMS = (("float16 tokens", "float16"), ("int8 tokens", "int8"), ("int4 tokens (the default)", "int4"))
FORMAT_2 = "format 2: float32 coarse, float16 tokens and maps"


def as_format_2(index: Path) -> Path:
    """A format-3 index with float16 tokens rewritten as format 2 wrote indexes: float32 coarse embeddings,
    float16 attention maps (even ones, of the stored shape: format 3 keeps none), an int64 owner.npy."""
    ix = GalleryIndex(index)
    if ix.format_version != 3 or not isinstance(ix.global_, np.ndarray):
        raise ValueError(f"{index}: not a format-3 index with float16 tokens")
    np.save(index / EMBEDDINGS, np.asarray(ix.embeddings, dtype=np.float32))
    np.save(index / ATTN, np.asarray(ix.attn, dtype=np.float16))
    np.save(index / OWNER, ix.owner.astype(np.int64))
    del ix
    manifest = json.loads((index / MANIFEST).read_text())
    manifest["format_version"] = 2
    for key in ("tokens", "coarse", "maps"):
        manifest.pop(key)
    (index / MANIFEST).write_text(json.dumps(manifest))
    return index


def forms(model, data, grid: int, folder: Path) -> Iterator[tuple[str, Shop]]:
    """The Luma gallery indexed at one zoom grid, encoded once (float16 tokens), as format 2 stored it, and
    converted to each other form (index_builder.edit.convert_index: the stored tokens recoded, nothing encoded
    again)."""
    with Shop.indexed(model, data.root, data.gallery, replace(ZoomViews(), grid=grid), tokens="float16") as shop:
        built = Path(shop.engine.index.path)
        old = built.parent / "format-2"  # beside it: the same relative gallery root
        shutil.copytree(built, old)
        yield FORMAT_2, Shop(SearchEngine(model, GalleryIndex(as_format_2(old))))
        for name, tokens in FORMS:
            if tokens == "float16":
                yield name, shop
                continue
            out = folder / f"grid{grid}-{tokens}"
            convert_index(built, out, tokens=tokens, progress=False, log=lambda _: None)
            yield name, Shop(SearchEngine(model, GalleryIndex(out)))


def rows(args: argparse.Namespace) -> dict:
    """Every form of every grid in one run: R@1 and bytes per photo, searched as the app searches."""
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    q = encode_records(model, data.root, data.query, desc="queries")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for grid in sorted(set(args.grids), reverse=True):
            for name, shop in forms(model, data, grid, Path(tmp)):
                ix = shop.engine.index
                disk = disk_bytes(ix)["files"]
                per_view = sum(f["bytes"] for n, f in disk.items() if n.endswith(".npy")) / ix.views
                per_photo = sum(f["bytes"] for n, f in disk.items() if n.endswith(".npy") or n == ITEMS) / len(ix)
                r = recall(shop, data, q, DEFAULT_RERANK_TOP)
                coarse = recall(shop, data, q, 0)  # the coarse stage alone: what picks ATA's candidates
                key = f"zoom grid {grid}: {name}"
                views = ix.views / len(ix)
                results[key] = {"grid": grid, "form": name, "views_per_photo": round(views, 2),
                                "bytes_per_view": round(per_view, 1), "bytes_per_photo": round(per_photo),
                                "R@1": r["R@1"], "R@10": r["R@10"], "coarse R@1": coarse["R@1"],
                                "coarse R@10": coarse["R@10"]}
                print(f"{key}: {views:.1f} views/photo, {per_view:.0f} B/view, {per_photo / 1000:.1f} kB/photo, "
                      f"R@1 {r['R@1']:.3f}, R@10 {r['R@10']:.3f}, coarse alone R@1 {coarse['R@1']:.3f}, "
                      f"R@10 {coarse['R@10']:.3f}", flush=True)
    print("\n| gallery views | stored form | bytes per view | kB per photo | R@1 (ATA) | R@10 (ATA) | R@1 coarse "
          "alone | R@10 coarse alone |\n|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| grid {r['grid']} ({r['views_per_photo']}) | {key.split(': ', 1)[1]} | {r['bytes_per_view']:.0f} | "
              f"{r['bytes_per_photo'] / 1000:.1f} | {r['R@1']:.3f} | {r['R@10']:.3f} | {r['coarse R@1']:.3f} | "
              f"{r['coarse R@10']:.3f} |")
    return results


def synthetic_rows(n: int, seed: int = 0, block: int = 100_000) -> np.ndarray:
    """n unit vectors from a Gaussian fitted to the demo index's coarse embeddings (mean and covariance)."""
    real = np.asarray(GalleryIndex(DEFAULT_INDEX_DIR).embeddings).astype(np.float64)
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
    r.add_argument("--grids", type=int, nargs="+", default=[ZoomViews().grid, 3, 2, 0], help="zoom grids to compare")
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
        results = {"rows": rows, "ann": ann}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
