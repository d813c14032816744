"""Search latency and approximate-index recall at 100k gallery vectors, measured in one run.

    python -m bench.bench_search [--n 100000] [--queries 200] [--index-type auto|hnsw|ivfpq|flat]

Gallery: real encodings (every view of the Luma gallery photos in assets/demo-index + the 713 distractor photos,
encoded here once and cached) plus synthetic vectors drawn to resemble them: a random real encoding whose global
and part tokens are perturbed with Gaussian noise and re-normalised (the coarse embedding is rebuilt from them).
Vectors are grouped into images of --views-per-image views (default: the demo index's mean, full photo + zoom
windows), so the search returns images scored by their best view, as on a real index.
Queries: other perturbations of real encodings. Reports p50/p95 of one query's search after encoding
(coarse only, and with ATA re-ranking of the top 100 from the stored fp16 tokens) for the chosen index at three
settings of its knob (HNSW efSearch, IVF-PQ nprobe), and recall@10 of the approximate index against exact search.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from index_builder import build_index
from index_builder.writer import Piece, write_index
from index_builder.faiss_index import INDEX_TYPES, choose_index_type
from mga.config import DEFAULT_INDEX_DIR, SHARED_DATA
from mga.hub import load_model
from mga.model import Encoding, coarse_embedding
from mga.index import GalleryIndex
from mga.search import SearchEngine
from mga.views import ZoomViews


def real_rows(model, demo: GalleryIndex, cache: Path) -> dict:
    dis_dir = cache / f"distractors-{model.fingerprint()}-full"
    if not (dis_dir / "manifest.json").exists():
        build_index(SHARED_DATA / "distractors", dis_dir, model=model, zoom=ZoomViews(grid=0),
                    progress=False, log=lambda m: None)
    dis = GalleryIndex(dis_dir)
    keep = demo.view_rows([r for r, it in enumerate(demo.items) if not it["item_id"].startswith("distractor-")])
    return {name: np.concatenate([np.asarray(getattr(demo, a)[keep]), np.asarray(getattr(dis, a))])
            for name, a in (("global", "global_"), ("parts", "parts"), ("attn", "attn"))}


def perturb(rng, g, parts, sigma):
    g = g.astype(np.float32) + sigma[:, None] * rng.standard_normal(g.shape, dtype=np.float32) / np.sqrt(g.shape[-1])
    parts = parts.astype(np.float32) + sigma[:, None, None] * rng.standard_normal(parts.shape, dtype=np.float32) \
        / np.sqrt(parts.shape[-1])
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    parts /= np.linalg.norm(parts, axis=-1, keepdims=True)
    return g, parts


def pct(ts, p):
    return float(np.percentile(np.asarray(ts) * 1e3, p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "mga-bench-cache"))
    ap.add_argument("--sigma", type=float, nargs=2, default=(0.3, 1.0), help="noise range of synthetic vectors")
    ap.add_argument("--index-type", default="auto", choices=INDEX_TYPES)
    ap.add_argument("--views-per-image", type=int, help="default: the demo index's views per image, rounded")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model = load_model(None)
    alpha = model.config.alpha
    demo = GalleryIndex(DEFAULT_INDEX_DIR)
    real = real_rows(model, demo, cache)
    n_real = len(real["global"])
    rng = np.random.default_rng(0)
    n_syn = args.n - n_real
    base = rng.integers(0, n_real, n_syn)
    sig = rng.uniform(*args.sigma, n_syn).astype(np.float32)
    g, parts = perturb(rng, real["global"][base], real["parts"][base], sig)
    g = np.concatenate([real["global"].astype(np.float32), g])
    parts = np.concatenate([real["parts"].astype(np.float32), parts])
    attn = np.concatenate([real["attn"], real["attn"][base]])
    emb = coarse_embedding(torch.from_numpy(g), torch.from_numpy(parts), alpha).numpy()
    itype = choose_index_type(len(emb), args.index_type)
    per_image = args.views_per_image or max(1, round(demo.views / len(demo)))
    counts = np.full(-(-len(emb) // per_image), per_image, dtype=np.int64)
    counts[-1] = len(emb) - per_image * (len(counts) - 1)
    print(f"gallery {len(emb)} vectors ({n_real} real, {n_syn} synthetic) in {len(counts)} images of "
          f"{per_image} views, dim {emb.shape[1]}, index {itype}; "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "ix"
        out.mkdir()
        items = [{"path": f"synthetic/{i}.jpg", "root": 0, "item_id": f"v{i}", "category": "", "width": 96,
                  "height": 96, "thumb": None, "meta": {}} for i in range(len(counts))]
        manifest = {"model": {"fingerprint": model.fingerprint(), "config": model.config.to_dict()},
                    "source": {"gallery": "synthetic"}, "roots": [{"relative": ".", "absolute": tmp}], "skipped": []}
        t = time.perf_counter()
        write_index(out, out, [Piece({"embeddings": emb, "global": g.astype(np.float16),
                                      "parts": parts.astype(np.float16), "attn": attn}, np.arange(len(emb)), counts)],
                    items, manifest, itype, progress=False)
        print(f"index written in {time.perf_counter() - t:.1f} s (FAISS {manifest['faiss']})")
        del g, parts, attn
        engine = SearchEngine.load(out, model=model)
        ix = engine.index
        # queries: fresh perturbations of real encodings (not gallery rows)
        qb = rng.integers(0, n_real, args.queries)
        qg, qp = perturb(rng, real["global"][qb], real["parts"][qb], np.full(args.queries, 0.5, np.float32))
        qe = coarse_embedding(torch.from_numpy(qg), torch.from_numpy(qp), alpha)
        qenc = Encoding(torch.from_numpy(qg), torch.from_numpy(qp), torch.zeros(args.queries, 1, 1, 1), qe)
        emb_all = np.asarray(ix.embeddings)
        per_view = qe @ torch.tensor(emb_all, dtype=qe.dtype).T
        image_scores = np.maximum.reduceat(per_view.numpy(), np.cumsum(counts) - counts, axis=1)  # its best view
        exact = np.argsort(-image_scores, axis=1, kind="stable")[:, :10]
        del per_view, image_scores
        for _ in range(5):  # warm-up
            engine.search_encoding(qenc[0], k=10, rerank_top=100)
        knob, values = ("nprobe", (8, ix.nprobe, 128)) if itype == "ivfpq" else ("ef_search", (64, ix.ef_search, 256))
        for value in sorted(set(values)):
            setattr(ix, knob, value)
            t_coarse, t_fine, hits, t_exact = [], [], 0, []
            for i in range(args.queries):
                t = time.perf_counter()
                r0 = engine.search_encoding(qenc[i], k=10, rerank_top=0)
                t_coarse.append(time.perf_counter() - t)
                t = time.perf_counter()
                engine.search_encoding(qenc[i], k=10, rerank_top=100)
                t_fine.append(time.perf_counter() - t)
                hits += len({m.index for m in r0.matches} & set(exact[i].tolist()))
            recall = hits / (10 * args.queries)
            print(f"{itype} {knob} {value:4d}: coarse-only p50 {pct(t_coarse, 50):.2f} ms "
                  f"p95 {pct(t_coarse, 95):.2f} ms"
                  f" | + ATA re-rank of top 100: p50 {pct(t_fine, 50):.2f} ms p95 {pct(t_fine, 95):.2f} ms"
                  f" | recall@10 vs exact {recall:.3f}")
        t_exact = []
        for i in range(min(50, args.queries)):
            t = time.perf_counter()
            np.argsort(-(emb_all @ qe[i].numpy()))[:10]
            t_exact.append(time.perf_counter() - t)
        print(f"brute-force exact numpy scan for reference: p50 {pct(t_exact, 50):.2f} ms")
        del engine, ix, emb_all


if __name__ == "__main__":
    main()
