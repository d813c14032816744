"""The one search engine, for the app and the command line: query image -> ranked, explained gallery matches.

Coarse to fine: FAISS inner product over the coarse embeddings of an index folder (built by
`python -m index_builder`; one row per view of each gallery image, see mga.views) gives the top M images, each
scored by its best view (re-scored exactly with the stored embeddings where FAISS's scores are approximate,
IVF-PQ); ATA then re-ranks them with the stored part and global tokens of all their views, and explains the top k
with heatmaps on the view that matched.

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
from .parts import names_for
from .hub import describe_weights
from .imageio import ImageSource, load_image
from .model import Encoding, MGAModel
from .views import FULL_BOX, ZoomViews

# The index folder's files (index_builder writes them; this module reads them).
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
FAISS_FILE = "index.faiss"  # HNSW or IVF-PQ; a flat (exact) index is rebuilt from the embeddings at load
EMBEDDINGS = "embeddings.npy"  # float32 (N, E) coarse embeddings: exact re-scoring and FAISS rebuilds
GLOBAL = "global.npy"  # float16 (N, D)
PARTS = "parts.npy"  # float16 (N, K, D)
ATTN = "attn.npy"  # float16 (N, K, h, w)
OWNER = "owner.npy"  # int64 (N,): the image (line of items.jsonl) of each row; rows of one image are adjacent
BOXES = "boxes.npy"  # float32 (N, 4): where each row's view lies in its image, (x0, y0, x1, y1) as fractions
SKIPPED = "skipped.txt"
FORMAT_VERSION = 2  # 2: rows are views (mga.views: full photo + zoom windows), owner.npy and boxes.npy

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


def _rows_float(array: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Some rows of a (memory-mapped, often fp16, writable) array as a float32 tensor. torch gathers the rows
    faster than numpy's fancy indexing of a memory map, and casts fp16 much faster (docs/benchmarks.md)."""
    index = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    return torch.from_numpy(array).index_select(0, index).float()


def _best_per_image(scores: np.ndarray | torch.Tensor, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of views in adjacent groups, `counts` (each >= 1) views per image -> each image's best score and the
    position of its best view, the first on ties (as mga.retrieval.best_view, which evaluation ranks with).
    numpy's segment reductions: much faster than best_view's scatters on the views of one search."""
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    starts = np.cumsum(counts) - counts
    best = np.maximum.reduceat(scores, starts)
    at_best = np.flatnonzero(scores == np.repeat(best, counts))
    return best, at_best[np.searchsorted(at_best, starts)]


def _top_images(images: np.ndarray, best: np.ndarray, best_rows: np.ndarray, m: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The m best of some images given each one's best-view score and row: (images, scores, rows), by score,
    ties by image (deterministic)."""
    order = np.lexsort((images, -best))[:m]
    return images[order], best[order], best_rows[order]


class GalleryIndex:
    """An index folder opened read-only: manifest, items (one per image), FAISS index and memory-mapped token
    arrays (one row per view: each image's full photo first, then its zoom windows)."""

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
        # copy-on-write maps: nothing writes to them, and torch can gather from them in place (_rows_float), which it
        # only does on writable memory
        mode = "c" if mmap else None
        self.embeddings = np.load(self.path / EMBEDDINGS, mmap_mode=mode)
        self.global_ = np.load(self.path / GLOBAL, mmap_mode=mode)
        self.parts = np.load(self.path / PARTS, mmap_mode=mode)
        self.attn = np.load(self.path / ATTN, mmap_mode=mode)
        n = len(self.items)
        if (self.path / OWNER).exists():
            self.owner = np.load(self.path / OWNER)
            self.boxes = np.load(self.path / BOXES)
        else:  # format 1: one full view per image
            self.owner = np.arange(n, dtype=np.int64)
            self.boxes = np.tile(np.array(FULL_BOX, dtype=np.float32), (n, 1))
        self.zoom = ZoomViews.from_dict(self.manifest.get("zoom"))
        v = len(self.owner)
        for name, arr in (("embeddings", self.embeddings), ("global", self.global_), ("parts", self.parts),
                          ("attn", self.attn), ("boxes", self.boxes)):
            if arr.shape[0] != v:
                raise IndexFormatError(f"{self.path}: {name} has {arr.shape[0]} rows but there are {v} views")
        if v and (np.any(np.diff(self.owner) < 0) or self.owner[-1] != n - 1):
            raise IndexFormatError(f"{self.path}: {OWNER} must map views to the {n} images in order")
        # rows of image i: first_row[i] (its full photo) up to first_row[i + 1]
        self.first_row = np.searchsorted(self.owner, np.arange(n + 1))
        params = self.manifest.get("faiss", {})
        self.index_type: str = params.get("type", "flat")
        if self.index_type == "flat":  # exact search over the stored embeddings: no second copy on disk
            self.faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
            self.faiss.add(np.ascontiguousarray(self.embeddings, dtype=np.float32))
        else:
            try:
                self.faiss = faiss.read_index(str(self.path / FAISS_FILE), faiss.IO_FLAG_MMAP if mmap else 0)
            except RuntimeError:  # not every index type maps; read it into memory then
                self.faiss = faiss.read_index(str(self.path / FAISS_FILE))
        if self.faiss.ntotal != v:
            raise IndexFormatError(f"{self.path}: FAISS holds {self.faiss.ntotal} vectors but there are {v} views")
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
        """Number of images (the rows of the arrays are views: see `views`)."""
        return len(self.items)

    @property
    def views(self) -> int:
        return len(self.owner)

    def view_count(self, images: np.ndarray) -> np.ndarray:
        """Number of views (rows) of each of some images."""
        images = np.asarray(images, dtype=np.int64)
        return self.first_row[images + 1] - self.first_row[images]

    def view_rows(self, images: np.ndarray) -> np.ndarray:
        """All rows (views) of some images, image by image."""
        images = np.asarray(images, dtype=np.int64)
        counts = self.view_count(images)
        return np.repeat(self.first_row[images] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())

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

    def category_images(self, category: str) -> np.ndarray:
        return self._by_category.get(category, np.zeros(0, dtype=np.int64))

    def _faiss_search(self, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top m views by FAISS, with exact scores, best first. IVF-PQ's own scores are
        approximate: it returns `refine` x m candidates, re-scored with the stored embeddings."""
        import faiss

        m = min(m, self.views)
        if self.index_type == "hnsw":  # IndexHNSWFlat: exact inner products of the stored vectors
            d, idx = self.faiss.search(q, m, params=faiss.SearchParametersHNSW(efSearch=max(self.ef_search, m)))
        elif self.index_type == "ivfpq":
            fetch = min(self.views, m * self.refine)
            _, idx = self.faiss.search(q, fetch, params=faiss.SearchParametersIVF(nprobe=self.nprobe))
            rows = idx[0][idx[0] >= 0]
            scores = self._scores(q, rows)
            order = np.argsort(-scores, kind="stable")
            return scores[order], rows[order]
        else:
            d, idx = self.faiss.search(q, m)
        found = idx[0] >= 0
        return d[0][found], idx[0][found]

    def _scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact coarse inner products of query q (1, E) with some rows. In torch, whose threads the rest of a
        search uses: numpy's own BLAS threads, left spinning after a product, slowed the ATA that follows ~2x at
        the median and ~10x at p95 (bench_search, 2 cores)."""
        return (_rows_float(self.embeddings, rows) @ torch.from_numpy(q[0])).numpy()

    def coarse_search(self, q: np.ndarray, m: int, category: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top m images by the coarse inner product of their best view, optionally within one category: FAISS
        finds candidate views (`_faiss_search`, exact scores), an image scores as the best of its views found.
        Returns (images, scores, best view rows), best first."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        allowed = None
        if category:
            allowed = self.category_images(category)
            if len(allowed) == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            if len(allowed) <= EXACT_SUBSET_MAX or self.index_type == "flat" and len(allowed) * 4 > len(self):
                return self._exact(q, allowed, m)
        # an image's best views come first and its other views far behind, so 2 views per wanted image usually
        # give m images; if not, fetch 4x more. A flat index scans every view whatever it returns, so it returns
        # enough views for m images of average view count at once.
        fetch_per_image = -(-self.views // max(1, len(self))) if self.index_type == "flat" else 2
        fetch = fetch_per_image * m * (1 if allowed is None else max(2, len(self) // len(allowed)))
        while True:  # over-fetch until m images (of the category) come back, or everything was searched
            scores, rows = self._faiss_search(q, fetch)
            owners = self.owner[rows]
            if allowed is not None:
                keep = np.isin(owners, allowed)
                scores, rows, owners = scores[keep], rows[keep], owners[keep]
            images, first = np.unique(owners, return_index=True)
            if len(images) >= m or fetch >= self.views:
                # exact scores, best first: an image's first returned view is the best of its views found, which
                # a flat index finds all of. An approximate index may miss an image's best view; it then scores
                # as its best view found (its recall against exact search: bench_search). Scoring every view of
                # the candidate images instead would cost a large share of a search.
                return _top_images(images, scores[first], rows[first], m)
            fetch = min(self.views, fetch * 4)

    def _exact(self, q: np.ndarray, images: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images = np.sort(np.asarray(images, dtype=np.int64))  # ascending reads from the memory map
        if len(images) == 0:
            return images, np.zeros(0, dtype=np.float32), images
        rows = self.view_rows(images)
        best, pick = _best_per_image(self._scores(q, rows), self.view_count(images))
        return _top_images(images, best, rows[pick], m)

    def tokens(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored global and part tokens of some rows (float32): all ATA needs."""
        return _rows_float(self.global_, rows), _rows_float(self.parts, rows)

    def encoding(self, rows: np.ndarray) -> Encoding:
        """Stored tokens of some rows as an Encoding (float32)."""
        return Encoding(*(_rows_float(a, rows) for a in (self.global_, self.parts, self.attn, self.embeddings)))


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
    part_names: list[str]  # per part, its name on garments of this match's category (mga.parts.names_for)
    global_contribution: float
    query_heatmap: np.ndarray | None = None  # float32 (H, W) in [0, 1], in the query image's frame
    match_heatmap: np.ndarray | None = None  # float32 (H, W) in [0, 1], in the match image's frame
    index: int = -1  # the image in the index (for gallery_image / "more like this")
    display_path: str = ""  # a thumbnail where the index has one, else `path`
    box: tuple[float, float, float, float] = FULL_BOX  # the view that matched: the full photo or a zoom window

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "coarse_score": round(self.coarse_score, 6),
                "item_id": self.item_id, "category": self.category, "image": self.path,
                "contributions": [round(c, 6) for c in self.contributions],
                "parts": [{"name": n, "contribution": round(c, 6)} for n, c in zip(self.part_names, self.contributions)],
                "global_contribution": round(self.global_contribution, 6),
                "matched_view": [round(b, 4) for b in self.box]}


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
    under torch.inference_mode, nothing writes to the index's memory maps, FAISS searches are const)."""

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
        return self.model.encode(self.model.transform(image)[None])

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
        images, coarse, best_rows = self.index.coarse_search(q.embedding[0].float().numpy(), m, category)
        t1 = time.perf_counter()
        if len(images) == 0:
            return SearchResult([], {"search_ms": (t1 - t0) * 1e3, "rerank_ms": 0.0, "explain_ms": 0.0,
                                     "total_ms": (t1 - t0) * 1e3}, tuple(query_size or (0, 0)))
        # ATA over every view of the top rerank_top images (each scores as its best view); the rest keep
        # their coarse order and best view
        n_rerank = min(rerank_top, len(images))
        view_rows = self.index.view_rows(images[:n_rerank])
        rows = np.concatenate([view_rows, best_rows[n_rerank:]])
        with torch.inference_mode():
            al = self.model.align_tokens(q.global_[:1], q.parts[:1], *self.index.tokens(rows))
        counts = np.ones(len(images), dtype=np.int64)
        counts[:n_rerank] = self.index.view_count(images[:n_rerank])
        best_ata, pick = _best_per_image(al.scores[0], counts)
        head = np.lexsort((np.arange(n_rerank), -best_ata[:n_rerank]))  # stable: ties keep coarse order
        order = np.concatenate([head, np.arange(n_rerank, len(images))])[:k]
        t2 = time.perf_counter()
        matches: list[Match] = []
        q_attn = q.attn[0].float().numpy()
        size = self.model.config.image_size
        query_maps = []
        for r, j in enumerate(order):
            image, c = int(images[j]), int(pick[j])
            row = int(rows[c])
            it = self.index.items[image]
            box = tuple(float(b) for b in self.index.boxes[row])
            contrib = al.contributions[0, c].numpy()
            mh = None
            if explain:
                match_attn = np.asarray(self.index.attn[row], dtype=np.float32)
                qg, mg = part_contribution_maps(contrib, q_attn, match_attn, al.assignment[0, c].numpy())
                query_maps.append(qg)
                mw, mh_ = it.get("width") or size, it.get("height") or size
                mh = to_image_frame(mg, int(mw), int(mh_), size, heatmap_max_side, box)
            matches.append(Match(
                rank=r + 1, score=float(best_ata[j] if j < n_rerank else coarse[j]), coarse_score=float(coarse[j]),
                item_id=str(it.get("item_id", "")), category=str(it.get("category", "")),
                path=str(self.index.image_path(image)), metadata=dict(it.get("meta", {})),
                contributions=[float(x) for x in contrib],
                part_names=names_for(self.model.config.part_names, it.get("category"), len(contrib)),
                global_contribution=float(al.global_term[0, c]),
                query_heatmap=None, match_heatmap=mh, index=image, display_path=str(self.index.display_path(image)),
                box=box))
        if query_maps and query_size is not None:  # the query's maps share one frame: one pass for all matches
            frames = to_image_frame(np.stack(query_maps), query_size[0], query_size[1], size, heatmap_max_side)
            for match, frame in zip(matches, frames):
                match.query_heatmap = frame
        t3 = time.perf_counter()
        timings = {"search_ms": (t1 - t0) * 1e3, "rerank_ms": (t2 - t1) * 1e3, "explain_ms": (t3 - t2) * 1e3,
                   "total_ms": (t3 - t0) * 1e3}
        return SearchResult(matches, timings, tuple(query_size or (0, 0)))

    def gallery_image(self, i: int, original: bool = False) -> Image.Image:
        """Gallery image i (its thumbnail unless `original`), e.g. for "more like this"."""
        path = self.index.image_path(i) if original else self.index.display_path(i)
        return load_image(path)

    def gallery_encoding(self, i: int) -> Encoding:
        """The stored encoding of image i's full photo: search with it for "more like this" without re-encoding."""
        return self.index.encoding(self.index.first_row[i:i + 1])


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
        parts = ", ".join(f"{n} {c:+.3f}" for n, c in zip(m.part_names, m.contributions))
        print(f"{m.rank:3d}  {m.score:.4f}  {m.item_id:<28s} {m.category:<22s} {m.path}   [g {m.global_contribution:+.3f} | {parts}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
