"""The one search engine, for the app and the command line: query image -> ranked, explained gallery matches.

Coarse to fine: FAISS inner product over the coarse embeddings of an index folder (built by
`python -m index_builder`) gives the top M candidates, re-scored exactly with the stored embeddings; ATA then
re-ranks them with the stored part and global tokens, and explains the top k with heatmaps.

    python -m mga.search --index assets/demo-index --image photo.jpg [-k 10] [--category Tees] [--json]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .config import DEFAULT_INDEX_DIR
from .explain import part_contribution_maps, to_image_frame
from .hub import describe_weights
from .imageio import ImageSource, load_image
from .model import Encoding, MGAModel

# The index folder's files (index_builder writes them; this module reads them).
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
FAISS_FILE = "index.faiss"
EMBEDDINGS = "embeddings.npy"  # float32 (N, E) coarse embeddings: exact re-scoring and FAISS rebuilds
GLOBAL = "global.npy"  # float16 (N, D)
PARTS = "parts.npy"  # float16 (N, K, D)
ATTN = "attn.npy"  # float16 (N, K, h, w)
SKIPPED = "skipped.txt"
FORMAT_VERSION = 1

DEFAULT_RERANK_TOP = 100
HEATMAP_MAX_SIDE = 1024  # heatmaps of bigger images are computed at this longest side (aspect kept)
EXACT_SUBSET_MAX = 20_000  # a category this small is searched exactly instead of over-fetching from FAISS


class IndexMismatchError(RuntimeError):
    """The index was built with other weights than the model searching it: its vectors mean nothing here."""


class IndexFormatError(RuntimeError):
    """The folder is not an MGA index, or an incomplete one."""


def rebuild_command(manifest: dict, index_dir: str | Path, weights: str | None) -> str:
    """The exact command that rebuilds this index with `weights`."""
    src = manifest.get("source", {})
    cmd = ["python", "-m", "index_builder", "--gallery", str(src.get("gallery", "GALLERY_DIR")), "--out", str(index_dir)]
    if src.get("csv"):
        cmd += ["--csv", str(src["csv"])]
    if weights:
        cmd += ["--weights", str(weights)]
    return shlex.join(cmd)


class GalleryIndex:
    """An index folder opened read-only: manifest, items, FAISS index and memory-mapped token arrays."""

    def __init__(self, path: str | Path, mmap: bool = True):
        import faiss

        self.path = Path(path)
        man = self.path / MANIFEST
        if not man.exists():
            hint = ""
            if self.path.parent.exists():
                tmp = sorted(p.name for p in self.path.parent.glob(self.path.name + ".tmp-*"))
                if tmp:
                    hint = f" (an unfinished build is in {tmp[-1]}; finish it with --resume)"
            raise IndexFormatError(f"{self.path}: no {MANIFEST}; not an MGA index folder{hint}. "
                                   f"Build one with: python -m index_builder --gallery GALLERY_DIR --out {self.path}")
        self.manifest: dict = json.loads(man.read_text())
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise IndexFormatError(f"{self.path}: index format {self.manifest['format_version']} is newer than "
                                   f"this code reads ({FORMAT_VERSION}); update the code or rebuild the index")
        with open(self.path / ITEMS) as f:
            self.items: list[dict] = [json.loads(line) for line in f if line.strip()]
        mode = "r" if mmap else None
        self.embeddings = np.load(self.path / EMBEDDINGS, mmap_mode=mode)
        self.global_ = np.load(self.path / GLOBAL, mmap_mode=mode)
        self.parts = np.load(self.path / PARTS, mmap_mode=mode)
        self.attn = np.load(self.path / ATTN, mmap_mode=mode)
        n = len(self.items)
        for name, arr in (("embeddings", self.embeddings), ("global", self.global_), ("parts", self.parts),
                          ("attn", self.attn)):
            if arr.shape[0] != n:
                raise IndexFormatError(f"{self.path}: {name} has {arr.shape[0]} rows but there are {n} items")
        try:
            self.faiss = faiss.read_index(str(self.path / FAISS_FILE), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError:  # not every index type maps; read it into memory then
            self.faiss = faiss.read_index(str(self.path / FAISS_FILE))
        if self.faiss.ntotal != n:
            raise IndexFormatError(f"{self.path}: FAISS holds {self.faiss.ntotal} vectors but there are {n} items")
        params = self.manifest.get("faiss", {})
        self.index_type: str = params.get("type", "flat")
        self.ef_search: int = int(params.get("ef_search", 128))
        self.nprobe: int = int(params.get("nprobe", 32))
        self.refine: int = int(params.get("refine", 1))  # candidates fetched per result, re-scored exactly
        roots = self.manifest.get("roots", [])
        self.roots = [self._resolve_root(r) for r in roots]
        cats = [it.get("category", "") for it in self.items]
        self.categories = sorted({c for c in cats if c})
        self._by_category: dict[str, np.ndarray] = {}
        for c in self.categories:
            self._by_category[c] = np.array([i for i, x in enumerate(cats) if x == c], dtype=np.int64)

    def _resolve_root(self, root: dict) -> Path:
        rel = root.get("relative")
        if rel is not None and (self.path / rel).exists():
            return (self.path / rel).resolve()
        return Path(root.get("absolute", rel or "."))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def fingerprint(self) -> str:
        return self.manifest.get("model", {}).get("fingerprint", "")

    def image_path(self, i: int) -> Path:
        it = self.items[i]
        return self.roots[it.get("root", 0)] / it["path"]

    def display_path(self, i: int) -> Path:
        """A small copy (thumbnail) where the builder made one, else the original."""
        thumb = self.items[i].get("thumb")
        return self.path / thumb if thumb else self.image_path(i)

    def category_rows(self, category: str) -> np.ndarray:
        return self._by_category.get(category, np.zeros(0, dtype=np.int64))

    def _faiss_search(self, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        m = min(m, len(self))
        if self.index_type == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, m))
            scores, idx = self.faiss.search(q, m, params=params)
        elif self.index_type == "ivfpq":
            fetch = min(len(self), m * self.refine)
            scores, idx = self.faiss.search(q, fetch, params=faiss.SearchParametersIVF(nprobe=self.nprobe))
        else:
            scores, idx = self.faiss.search(q, m)
        return idx[0], scores[0]

    def coarse_search(self, q: np.ndarray, m: int, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top m rows by the coarse inner product (exact re-scoring of the FAISS candidates with the stored
        embeddings), optionally within one category; returns (rows, scores), best first."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        if category:
            rows = self.category_rows(category)
            if len(rows) == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if len(rows) <= EXACT_SUBSET_MAX or self.index_type == "flat" and len(rows) * 4 > len(self):
                return self._exact(q, rows, m)
            fetch = m * max(2, len(self) // len(rows))
            while True:  # over-fetch until m of the category come back, or everything was searched
                idx, _ = self._faiss_search(q, fetch)
                idx = idx[idx >= 0]
                keep = idx[np.isin(idx, rows)]
                if len(keep) >= m or fetch >= len(self):
                    return self._exact(q, keep, m)
                fetch = min(len(self), fetch * 4)
        idx, _ = self._faiss_search(q, m)
        idx = idx[idx >= 0]
        return self._exact(q, idx, m)

    def _exact(self, q: np.ndarray, rows: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        sorted_rows = np.sort(rows)  # ascending reads from the memory map
        scores = np.asarray(self.embeddings[sorted_rows], dtype=np.float32) @ q[0]
        order = np.lexsort((sorted_rows, -scores))[:m]  # by score, ties by row: deterministic
        return sorted_rows[order], scores[order]

    def encoding(self, rows: np.ndarray) -> Encoding:
        """Stored tokens of some rows as an Encoding (float32)."""
        rows = np.asarray(rows, dtype=np.int64)
        t = lambda a: torch.from_numpy(np.asarray(a[rows], dtype=np.float32))  # noqa: E731
        return Encoding(t(self.global_), t(self.parts), t(self.attn), t(self.embeddings))


@dataclass
class Match:
    """One gallery image found for a query, with why it matched."""

    rank: int
    score: float  # ATA score (the coarse score where the match was not re-ranked)
    coarse_score: float
    item_id: str
    category: str
    path: str  # absolute path of the gallery image
    metadata: dict
    contributions: list[float]  # per part, ATA's c_k
    global_contribution: float
    query_heatmap: np.ndarray | None = None  # float32 (H, W) in [0, 1], in the query image's frame
    match_heatmap: np.ndarray | None = None  # float32 (H, W) in [0, 1], in the match image's frame
    index: int = -1  # row in the index (for gallery_image / "more like this")
    display_path: str = ""  # a thumbnail where the index has one, else `path`

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "coarse_score": round(self.coarse_score, 6),
                "item_id": self.item_id, "category": self.category, "image": self.path,
                "contributions": [round(c, 6) for c in self.contributions],
                "global_contribution": round(self.global_contribution, 6)}


@dataclass
class SearchResult:
    matches: list[Match]
    timings: dict[str, float] = field(default_factory=dict)  # encode_ms search_ms rerank_ms explain_ms total_ms
    query_size: tuple[int, int] = (0, 0)  # (width, height) of the query image

    def __post_init__(self):
        scores = [m.score for m in self.matches]
        if any(a < b - 1e-6 for a, b in zip(scores, scores[1:])):
            raise AssertionError("search results must be sorted by score")
        if len({m.path for m in self.matches}) != len(self.matches):
            raise AssertionError("search results must not repeat an image")

    def to_json(self) -> list[dict]:
        return [m.to_dict() for m in self.matches]


class SearchEngine:
    """Model + index folder. Thread-safe: searches share only read-only state (the model runs in eval mode
    under torch.inference_mode, the index arrays are read-only memory maps, FAISS searches are const)."""

    def __init__(self, model: MGAModel, index: GalleryIndex, weights: str | Path | None = None):
        self.model = model.eval()
        self.index = index
        self.weights = weights
        fp = model.fingerprint()
        if index.fingerprint != fp:
            raise IndexMismatchError(
                f"index {index.path} was built with model fingerprint {index.fingerprint or '(none)'} "
                f"({index.manifest.get('model', {}).get('weights', 'unknown weights')}), but the loaded model "
                f"({describe_weights(weights)}) has fingerprint {fp}. Its vectors are meaningless to this model; "
                f"rebuild the index with: {rebuild_command(index.manifest, index.path, _weights_arg(weights))}")
        self.fingerprint = fp
        self.categories: list[str] = index.categories
        cfg = model.config
        self.info: dict[str, Any] = {
            "weights": describe_weights(weights), "fingerprint": fp, "index": str(index.path),
            "index_type": index.index_type, "images": len(index), "categories": self.categories,
            "items": len({it.get("item_id") for it in index.items}), "image_size": cfg.image_size,
            "num_parts": cfg.num_parts, "built": index.manifest.get("built_at", ""),
            "skipped": index.manifest.get("counts", {}).get("skipped", 0),
        }

    @classmethod
    def load(cls, index_dir: str | Path = DEFAULT_INDEX_DIR, weights: str | Path | None = None,
             model: MGAModel | None = None, device: str = "cpu") -> "SearchEngine":
        """Open an index folder with a model (given, or loaded from `weights`; None = embedded default).
        Raises IndexMismatchError when the index was built with other weights."""
        index = GalleryIndex(index_dir)
        if model is None:
            from .hub import load_model

            model = load_model(weights, device=device)
        return cls(model, index, weights)

    # ---------------------------------------------------------------- querying
    def encode(self, image: Image.Image) -> Encoding:
        with torch.inference_mode():
            x = self.model.transform(image)[None].to(self.model.device)
            return self.model(x).to("cpu")

    def search(self, image: ImageSource, k: int = 10, category: str | None = None,
               rerank_top: int = DEFAULT_RERANK_TOP, explain: bool = True,
               heatmap_max_side: int | None = HEATMAP_MAX_SIDE) -> SearchResult:
        """Ranked matches for one query image (anything `load_image` takes; ImageError propagates)."""
        t0 = time.perf_counter()
        img = load_image(image, name=None if not isinstance(image, (str, Path)) else str(image))
        q = self.encode(img)
        encode_ms = (time.perf_counter() - t0) * 1e3
        res = self.search_encoding(q, k, category, rerank_top, explain, query_size=img.size,
                                   heatmap_max_side=heatmap_max_side)
        res.timings["encode_ms"] = encode_ms
        res.timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return res

    def search_encoding(self, q: Encoding, k: int = 10, category: str | None = None,
                        rerank_top: int = DEFAULT_RERANK_TOP, explain: bool = False,
                        query_size: tuple[int, int] | None = None,
                        heatmap_max_side: int | None = HEATMAP_MAX_SIDE) -> SearchResult:
        """Ranked matches for an already encoded query (one image). Heatmaps need `query_size` (w, h)."""
        t0 = time.perf_counter()
        if category == "":
            category = None
        if category is not None and category not in self.index.categories:
            raise ValueError(f"unknown category {category!r}; the index has {self.categories}")
        m = max(rerank_top, k)
        rows, coarse = self.index.coarse_search(q.embedding[0].float().numpy(), m, category)
        t1 = time.perf_counter()
        matches: list[Match] = []
        n_rerank = min(rerank_top, len(rows))
        if len(rows) == 0:
            return SearchResult([], {"search_ms": (t1 - t0) * 1e3, "rerank_ms": 0.0, "explain_ms": 0.0,
                                     "total_ms": (t1 - t0) * 1e3}, tuple(query_size or (0, 0)))
        cand = self.index.encoding(rows)
        with torch.inference_mode():
            al = self.model.align(q[0], cand)
        ata = al.scores[0].numpy()
        if n_rerank > 0:
            head = np.lexsort((np.arange(n_rerank), -ata[:n_rerank]))  # stable: ties keep coarse order
            order = np.concatenate([head, np.arange(n_rerank, len(rows))])
        else:
            order = np.arange(len(rows))
        order = order[:k]
        t2 = time.perf_counter()
        contrib = al.contributions[0].numpy()
        glob = al.global_term[0].numpy()
        pi = al.assignment[0].numpy()
        q_attn = q.attn[0].float().numpy()
        size = self.model.config.image_size
        for r, j in enumerate(order):
            row = int(rows[j])
            it = self.index.items[row]
            reranked = j < n_rerank
            qh = mh = None
            if explain:
                qg, mg = part_contribution_maps(contrib[j], q_attn, cand.attn[j].numpy(), pi[j])
                if query_size is not None:
                    qh = to_image_frame(qg, query_size[0], query_size[1], size, heatmap_max_side)
                mw, mh_ = it.get("width") or size, it.get("height") or size
                mh = to_image_frame(mg, int(mw), int(mh_), size, heatmap_max_side)
            matches.append(Match(
                rank=r + 1, score=float(ata[j] if reranked else coarse[j]), coarse_score=float(coarse[j]),
                item_id=str(it.get("item_id", "")), category=str(it.get("category", "")),
                path=str(self.index.image_path(row)), metadata=dict(it.get("meta", {})),
                contributions=[float(c) for c in contrib[j]], global_contribution=float(glob[j]),
                query_heatmap=qh, match_heatmap=mh, index=row, display_path=str(self.index.display_path(row))))
        t3 = time.perf_counter()
        timings = {"search_ms": (t1 - t0) * 1e3, "rerank_ms": (t2 - t1) * 1e3, "explain_ms": (t3 - t2) * 1e3,
                   "total_ms": (t3 - t0) * 1e3}
        return SearchResult(matches, timings, tuple(query_size or (0, 0)))

    def gallery_image(self, i: int, original: bool = False) -> Image.Image:
        """Gallery image of index row i (its thumbnail unless `original`), e.g. for "more like this"."""
        path = self.index.image_path(i) if original else self.index.display_path(i)
        return load_image(path)

    def gallery_encoding(self, i: int) -> Encoding:
        """The stored encoding of index row i: search with it for "more like this" without re-encoding."""
        return self.index.encoding(np.array([i]))


def _weights_arg(weights: str | Path | None) -> str | None:
    return None if weights is None else str(weights)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mga.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="index folder (default: the demo index)")
    p.add_argument("--image", required=True, help="query image")
    p.add_argument("--weights", help="Hub id or checkpoint folder; default: embedded (must match the index)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--category", help="only this category")
    p.add_argument("--rerank-top", type=int, default=DEFAULT_RERANK_TOP, help="candidates ATA re-ranks (0: off)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    from .imageio import ImageError

    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Hub mixin prints while loading; keep stdout JSON-clean
            engine = SearchEngine.load(args.index, weights=args.weights)
        res = engine.search(args.image, k=args.k, category=args.category, rerank_top=args.rerank_top,
                            explain=False)
    except (ImageError, IndexMismatchError, IndexFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"matches": res.to_json(), "timings": res.timings}, indent=2))
        return 0
    print(f"{len(engine.index)} images in {args.index} ({engine.index.index_type}); "
          f"{' '.join(f'{k} {v:.1f}' for k, v in res.timings.items())}")
    for m in res.matches:
        parts = " ".join(f"{c:+.3f}" for c in m.contributions)
        print(f"{m.rank:3d}  {m.score:.4f}  {m.item_id:<28s} {m.category:<22s} {m.path}   [g {m.global_contribution:+.3f} | {parts}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
