"""A shop of a million photos on one machine: a format-3 index of N synthetic photos (default views) built from
noisy copies of demo-index photos (all its views, tokens renormalised) by the builder's writer, then, in a fresh
process, opened as the app opens it (start-up time, resident memory: its arrays and IVF lists memory-mapped),
searched with the Luma test queries (coarse top 100, then ATA: p50 / p95) and its coarse stage compared with an
exact scan of every view (recall@10 and @100 of the images). Needs about 14 GB of disk for 1M photos; deletes the
index afterwards unless --keep.

    python -m bench.million [--photos 1000000] [--data ../shared/data/luma-inshop] [--nlist 1024] [--keep]
    python -m bench.million measure --index DIR [--data ../shared/data/luma-inshop]   # the measuring half
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from index_builder.writer import Piece, disk_bytes, write_index  # noqa: E402
from mga.config import DEFAULT_INDEX_DIR, DEFAULT_RERANK_TOP, MGAConfig  # noqa: E402
from mga.data import load_retrieval_data  # noqa: E402
from mga.hub import load_model  # noqa: E402
from mga.index import GalleryIndex  # noqa: E402
from mga.search import SearchEngine  # noqa: E402
from training.evaluate import encode_records  # noqa: E402


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
    demo = GalleryIndex(DEFAULT_INDEX_DIR)
    trained = MGAConfig.from_dict(demo.manifest["model"]["config"]).embed_dim
    syn = SyntheticViews(demo, args.photos, tuple(args.sigma), 0, trained)
    items = [dict(demo.items[b], path=f"synthetic/{i:08d}.jpg", item_id=f"synthetic-{i:08d}", thumb=None)
             for i, b in enumerate(syn.base.tolist())]
    manifest = {"created_by": "bench.million", "model": demo.manifest["model"],
                "source": {"gallery": "synthetic (bench.million)"}, "roots": [{"relative": "."}],
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
    out = Path(args.out)
    results = {}
    if not (out / "manifest.json").exists():
        results["build"] = build_million(args, out)
        print(json.dumps(results["build"]), flush=True)
    cmd = [sys.executable, "-m", "bench.million", "measure", "--index", str(out), "--queries",
           str(args.queries)] + (["--data", args.data] if args.data else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    results["measured"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results["measured"], indent=1), flush=True)
    if not args.keep:
        shutil.rmtree(out)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if (argv if argv is not None else sys.argv[1:])[:1] == ["measure"]:  # the measuring half, in a fresh process
        m = argparse.ArgumentParser(prog="python -m bench.million measure")
        m.add_argument("measure")
        m.add_argument("--index", required=True)
        m.add_argument("--data")
        m.add_argument("--queries", type=int, default=142)
        m.add_argument("--photo-queries", type=int, default=20, help="photos searched whole against one encode")
        with torch.inference_mode():
            print(json.dumps(measure_million(m.parse_args(argv))))
        return
    p.add_argument("--photos", type=int, default=1_000_000)
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "mga-million"),
                   help="index folder (deleted afterwards unless --keep)")
    p.add_argument("--data", help="queries: this data set's test queries (default: noisy demo rows)")
    p.add_argument("--queries", type=int, default=142)
    p.add_argument("--sigma", type=float, nargs=2, default=(0.3, 1.0), help="noise range, relative to a token's norm")
    p.add_argument("--tokens", default="int4", choices=("float16", "int8", "int4"))
    p.add_argument("--index-type", default="auto", choices=("auto", "flat", "hnsw", "ivfpq"))
    p.add_argument("--nlist", type=int, default=1024, help="IVF lists (the builder's 4 sqrt(N) trains for hours here)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    with torch.inference_mode():
        results = million(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
