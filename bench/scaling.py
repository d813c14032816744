"""What a gallery of millions costs: bytes per photo against R@1, and FAISS index types at 1M vectors.

    python -m bench.scaling rows --data ../shared/data/luma-inshop [--weights DIR] [--json out.json]
    python -m bench.scaling ann [--n 1000000] [--queries 200] [--json out.json]
    python -m bench.scaling million [--photos 1000000] [--data ../shared/data/luma-inshop] [--json out.json]

`rows`: the Luma test split searched the app's way (coarse top 100, then ATA; and by the coarse stage alone, what
chooses ATA's candidates in a large gallery) with its gallery stored as format 2 did (float32 coarse embeddings,
float16 tokens and maps) and as format 3 does with each form of its tokens (float16, int8, int4: written by the
builder's writer, read back by GalleryIndex, the coarse embeddings rebuilt from the tokens), at several zoom grids
(0: full photos only, taken as the first view of the finest grid). Prints bytes per gallery photo (arrays and an
items.jsonl line) and R@1 / R@10 of each, all from one encoding per grid, then the table of docs/scaling.md.

`million`: a format-3 index of 1M photos (default views) built from synthetic rows (each photo a noisy copy of
a demo-index photo, all its views, tokens renormalised) by the builder's writer, then, in a fresh process, opened
as the app opens it (start-up time, resident memory: its arrays and IVF lists memory-mapped), searched with the
Luma test queries (coarse top 100, then ATA: p50 / p95) and its coarse stage compared with an exact scan of every
view (recall@10 and @100 of the images). Needs about 14 GB of disk for 1M photos; deletes the index afterwards.

    python -m bench.scaling million [--photos 1000000] [--data ../shared/data/luma-inshop] [--nlist 1024]

`ann`: N synthetic coarse embeddings with the spectrum of real ones (a Gaussian fitted to the demo index's rows,
unit-normalised), indexed as the builder does (exact flat, HNSW, IVF-PQ with exact re-scoring): build time,
memory, latency of one query (1 and all threads) and recall@10 of the approximate indexes against exact search.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
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
from mga.index import GalleryIndex  # noqa: E402
from mga.index_format import ITEMS  # noqa: E402
from mga.model import Encoding  # noqa: E402
from mga.views import ZoomViews  # noqa: E402

FORMS = (("format 2: float32 coarse, float16 tokens and maps", None),
         ("format 3: float16 tokens", "float16"),
         ("format 3: int8 tokens", "int8"),
         ("format 3: int4 tokens (the default)", "int4"))


def format2_bytes(g: Encoding) -> int:
    """A view's bytes in format 2: float32 coarse embedding, float16 global and part tokens and maps, a float32
    box and an int64 owner."""
    return 4 * g.embedding[0].numel() + 2 * (g.global_[0].numel() + g.parts[0].numel() + g.attn[0].numel()) + 16 + 8


def stored(g: Encoding, owner: torch.Tensor, tokens: str | None, manifest: dict, folder: Path
           ) -> tuple[Encoding, float]:
    """The gallery `g` as a search over an index of that form reads it, and the form's bytes per view. Format 3
    is written by the builder's own writer (index_builder.writer) and read back by GalleryIndex; format 2 is what
    its writer stored (the model's float32 coarse embedding, float16 tokens)."""
    if tokens is None:
        half = Encoding(g.global_.half().float(), g.parts.half().float(), g.attn.half().float(), g.embedding.float())
        return half, format2_bytes(g)
    from index_builder.writer import Piece, disk_bytes, write_index

    counts = torch.bincount(owner).numpy()
    items = [{"path": f"{i}.jpg", "root": 0, "item_id": str(i), "category": "", "width": 1, "height": 1,
              "thumb": None, "meta": {}} for i in range(len(counts))]
    out = folder / tokens
    out.mkdir()
    arrays = {"global": g.global_.half().numpy(), "parts": g.parts.half().numpy(), "attn": g.attn.half().numpy()}
    write_index(out, out, [Piece(arrays, np.arange(len(g)), counts)], items, dict(manifest), "flat",
                progress=False, tokens=tokens)
    ix = GalleryIndex(out)
    disk = disk_bytes(ix)["files"]
    per_view = sum(f["bytes"] for name, f in disk.items() if name.endswith(".npy")) / len(g)
    return ix.encoding(np.arange(len(g))), per_view


def rows(args: argparse.Namespace) -> dict:
    """Every form of every grid in one run: R@1 and bytes per photo, format 2 beside format 3."""
    model = load_model(args.weights)
    data = load_retrieval_data(args.data)
    q = encode_records(model, data.root, data.query, desc="queries")
    items = DEFAULT_INDEX_DIR / ITEMS  # an item line's bytes, measured on the demo index
    item_bytes = items.stat().st_size / len(items.read_text(encoding="utf-8").splitlines())
    manifest = {"model": {"fingerprint": model.fingerprint(), "config": model.config.to_dict()},
                "source": {"gallery": "bench.scaling"}, "roots": [{"relative": "."}], "skipped": []}
    results, encoded = {}, {}
    for grid in sorted(set(args.grids), reverse=True):
        if grid == 0 and encoded:  # full photos only: each image's first view of any grid, not encoded again
            g, owner = next(iter(encoded.values()))
            first = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(owner[1:] != owner[:-1]).flatten() + 1])
            g, owner = g[first], owner[first]
        else:
            g, owner = encode_gallery(model, data.root, data.gallery, replace(ZoomViews(), grid=grid))
            encoded[grid] = (g, owner)
        views = len(g) / len(data.gallery)
        with tempfile.TemporaryDirectory() as tmp:
            for name, tokens in FORMS:
                enc, per_view = stored(g, owner, tokens, manifest, Path(tmp))
                r = recall(model, data, q, enc, owner, DEFAULT_RERANK_TOP)
                coarse = recall(model, data, q, enc, owner, 0)  # the coarse stage alone: what picks ATA's candidates
                key = f"zoom grid {grid}: {name}"
                per_photo = views * per_view + item_bytes
                results[key] = {"grid": grid, "tokens": tokens or "format 2", "views_per_photo": round(views, 2),
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


class SyntheticViews:
    """Rows of a synthetic gallery for `Piece`: photo i is a copy of real image base[i] of the demo index (all its
    views, their boxes) with noise sigma[i] on each token (relative to its norm), each token renormalised as the
    model's are (the trained global token, the anchor (kept >= 0, as a GeM of ReLU features) and each part). Rows
    are made on demand, the same for the same slice, so that a 1M-photo gallery never sits in memory."""

    def __init__(self, demo: GalleryIndex, photos: int, sigma: tuple[float, float], seed: int, trained: int):
        rng = np.random.default_rng(seed)
        self.real = {"global": np.asarray(demo.global_, np.float32), "parts": np.asarray(demo.parts, np.float32),
                     "boxes": np.asarray(demo.boxes, np.float32)}
        self.base = rng.integers(0, len(demo), photos)
        self.sigma = rng.uniform(*sigma, photos).astype(np.float32)
        self.counts = demo.view_count(self.base)
        self.first = np.concatenate([[0], np.cumsum(self.counts)])
        self.real_first, self.trained, self.seed = demo.first_row, trained, seed
        self.views = int(self.first[-1])

    def owner(self, start: int, stop: int) -> np.ndarray:
        return np.searchsorted(self.first, np.arange(start, stop), side="right") - 1

    def piece_arrays(self) -> dict:
        return {name: _Lazy(self, name) for name in ("global", "parts", "boxes")}

    def make(self, name: str, start: int, stop: int) -> np.ndarray:
        photo = self.owner(start, stop)
        rows = self.real_first[self.base[photo]] + np.arange(start, stop) - self.first[photo]
        x = self.real[name][rows]
        if name == "boxes":
            return x
        rng = np.random.default_rng((self.seed, start, len(name)))
        sigma = self.sigma[photo].reshape((-1,) + (1,) * (x.ndim - 1))
        if name == "parts":
            return _noisy(x, sigma, rng)
        t, a = x[:, :self.trained], x[:, self.trained:]
        return np.concatenate([_noisy(t, sigma, rng), _noisy(a, sigma, rng, nonneg=True)], 1)


def _noisy(x: np.ndarray, sigma: np.ndarray, rng, nonneg: bool = False) -> np.ndarray:
    """x plus Gaussian noise of sigma times its norm, back to its norm (each vector along the last axis)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    y = x + sigma * norm * rng.standard_normal(x.shape, dtype=np.float32) / np.sqrt(x.shape[-1])
    if nonneg:
        y = np.clip(y, 0, None)
    return (y * (norm / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12))).astype(np.float32)


class _Lazy:
    def __init__(self, views: SyntheticViews, name: str):
        self.views, self.name = views, name
        self.shape = (views.views,) + views.real[name].shape[1:]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            return self.views.make(self.name, start, stop)
        rows = np.asarray(key)
        out = np.empty((len(rows),) + self.shape[1:], np.float32)
        for i, r in enumerate(rows):  # only small scattered reads come here
            out[i] = self.views.make(self.name, int(r), int(r) + 1)[0]
        return out


def rss() -> dict:
    """This process's resident memory (MB): all of it, and its anonymous part (what it holds itself; the rest
    is file pages of its memory maps, which the kernel may drop)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def build_million(args: argparse.Namespace, out: Path) -> dict:
    from index_builder.writer import Piece, write_index
    from mga.config import MGAConfig

    demo = GalleryIndex(DEFAULT_INDEX_DIR)
    trained = MGAConfig.from_dict(demo.manifest["model"]["config"]).embed_dim
    syn = SyntheticViews(demo, args.photos, tuple(args.sigma), 0, trained)
    items = [dict(demo.items[b], path=f"synthetic/{i:08d}.jpg", item_id=f"synthetic-{i:08d}", thumb=None)
             for i, b in enumerate(syn.base.tolist())]
    manifest = {"created_by": "bench.scaling million", "model": demo.manifest["model"],
                "source": {"gallery": "synthetic (bench.scaling million)"}, "roots": [{"relative": "."}],
                "zoom": demo.manifest.get("zoom"), "skipped": []}
    print(f"{args.photos} photos, {syn.views} views ({syn.views / args.photos:.2f} per photo) -> {out}", flush=True)
    t = time.perf_counter()
    out.mkdir(parents=True)
    write_index(out, out, [Piece(syn.piece_arrays(), np.arange(syn.views), syn.counts)], items, manifest,
                args.index_type, progress=True, tokens=args.tokens, nlist=args.nlist)
    return {"photos": args.photos, "views": syn.views, "build_s": round(time.perf_counter() - t, 1),
            "faiss": manifest["faiss"], "tokens": manifest["tokens"]}


def measure_million(args: argparse.Namespace) -> dict:
    """In a fresh process: open the index as the app does, search it with the Luma test queries (coarse top 100,
    ATA), and compare its coarse stage with exact search."""
    from index_builder.writer import disk_bytes
    from mga.search import SearchEngine

    out = Path(args.index)
    res = {"rss_mb_before": rss()}
    t = time.perf_counter()  # SearchEngine.load, step by step: what the app's start-up does
    ix = GalleryIndex(out)
    res["open_index_s"] = round(time.perf_counter() - t, 2)
    res["rss_mb_index_open"] = rss()
    t = time.perf_counter()
    model = load_model(None)
    res["load_model_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    engine = SearchEngine(model, ix)
    res["engine_checks_s"] = round(time.perf_counter() - t, 2)
    res["start_up_s"] = round(res["open_index_s"] + res["load_model_s"] + res["engine_checks_s"], 2)
    res["rss_mb_engine_loaded"] = rss()
    res["disk"] = disk_bytes(ix)
    if args.data:
        data = load_retrieval_data(args.data)
        q = encode_records(model, data.root, data.query[:args.queries], desc="queries")
    else:  # noisy copies of demo rows
        rng = np.random.default_rng(7)
        demo = GalleryIndex(DEFAULT_INDEX_DIR)
        rows = rng.integers(0, demo.views, args.queries)
        q = demo.encoding(rows)
    times, coarse_ms, ata_ms = [], [], []
    for i in range(len(q)):
        t = time.perf_counter()
        r = engine.search_encoding(q[i], k=10, rerank_top=DEFAULT_RERANK_TOP)
        times.append((time.perf_counter() - t) * 1e3)
        coarse_ms.append(r.timings["search_ms"])
        ata_ms.append(r.timings["rerank_ms"])
    res["rss_mb_after_queries"] = rss()
    pct = lambda xs, p: round(float(np.percentile(xs, p)), 1)  # noqa: E731
    if args.data:  # the engine's whole query from a photo (encode, search, explain) against one encode, interleaved
        from mga.imageio import load_image

        photos = [load_image(data.root / r.path) for r in data.query[:args.photo_queries]]
        engine.search(photos[0], k=10, products=True)  # warm-up
        one, whole = [], []
        for img in photos:
            t = time.perf_counter()
            model.encode_images([img])
            one.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            engine.search(img, k=10, products=True)
            whole.append((time.perf_counter() - t) * 1e3)
        res["photo_query_ms"] = {"encode_p50": pct(one, 50), "search_p50": pct(whole, 50),
                                 "ratio": round(float(np.median(whole) / np.median(one)), 2), "queries": len(photos)}
    res["query_ms"] = {"p50": pct(times, 50), "p95": pct(times, 95), "coarse_p50": pct(coarse_ms, 50),
                       "coarse_p95": pct(coarse_ms, 95), "ata_p50": pct(ata_ms, 50), "ata_p95": pct(ata_ms, 95),
                       "queries": len(q), "torch_threads": torch.get_num_threads()}
    # the coarse stage against exact search: every view scored, block by block, each image by its best view
    qe = q.embedding.float()
    best = torch.full((len(q), len(ix)), -torch.inf)
    t = time.perf_counter()
    for s in range(0, ix.views, 65536):
        rows = np.arange(s, min(ix.views, s + 65536))
        scores = qe @ ix.embeddings.rows(rows).T
        owner = torch.from_numpy(ix.owner[rows])
        best.scatter_reduce_(1, owner.expand(len(q), -1), scores, reduce="amax")
    res["exact_scan_s"] = round(time.perf_counter() - t, 1)
    found = {10: [], 100: []}
    for i in range(len(q)):
        images, _, _ = ix.coarse_search(qe[i].numpy(), DEFAULT_RERANK_TOP)
        for k in found:
            truth = set(torch.topk(best[i], k).indices.tolist())
            found[k].append(len(truth & set(images[:k].tolist())) / k)
    res["coarse_recall"] = {f"@{k}": round(float(np.mean(v)), 3) for k, v in found.items()}
    return res


def million(args: argparse.Namespace) -> dict:
    import shutil
    import subprocess
    import sys

    out = Path(args.out)
    results = {}
    if not (out / "manifest.json").exists():
        results["build"] = build_million(args, out)
        print(json.dumps(results["build"]), flush=True)
    cmd = [sys.executable, "-m", "bench.scaling", "million-measure", "--index", str(out), "--queries",
           str(args.queries)] + (["--data", args.data] if args.data else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    results["measured"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results["measured"], indent=1), flush=True)
    if not args.keep:
        shutil.rmtree(out)
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
    m = sub.add_parser("million", help="build (synthetic rows), open and search a format-3 index of 1M photos")
    m.add_argument("--photos", type=int, default=1_000_000)
    m.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "mga-million"),
                   help="index folder (deleted afterwards unless --keep)")
    m.add_argument("--data", help="queries: this data set's test queries (default: noisy demo rows)")
    m.add_argument("--queries", type=int, default=142)
    m.add_argument("--sigma", type=float, nargs=2, default=(0.3, 1.0), help="noise range, relative to a token's norm")
    m.add_argument("--tokens", default="int4", choices=("float16", "int8", "int4"))
    m.add_argument("--index-type", default="auto", choices=("auto", "flat", "hnsw", "ivfpq"))
    m.add_argument("--nlist", type=int, default=1024, help="IVF lists (the builder's 4 sqrt(N) trains for hours here)")
    m.add_argument("--keep", action="store_true")
    mm = sub.add_parser("million-measure")  # the measuring half of `million`, in a fresh process
    mm.add_argument("--index", required=True)
    mm.add_argument("--data")
    mm.add_argument("--queries", type=int, default=142)
    mm.add_argument("--photo-queries", type=int, default=20, help="photos searched whole against one encode")
    for s in (r, a, m):
        s.add_argument("--json", help="write the results here")
    args = p.parse_args()
    with torch.inference_mode():
        if args.cmd == "million-measure":
            print(json.dumps(measure_million(args)))
            return
        results = {"rows": rows, "ann": ann, "million": million}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
