"""The index folder's writer: arrays, FAISS, items and manifest into a build folder (then swapped in whole), and
where the gallery root is recorded. The format it writes: mga.index."""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mga.files import atomic_path
from mga.index import (ATTN, BOXES, EMBEDDINGS, FAISS_FILE, FORMAT_VERSION, GLOBAL, ITEMS, MANIFEST,
                       MANIFEST_MAX_BYTES, OWNER, PARTS, SKIPPED, items_max_bytes)
from mga.model import MGAModel
from mga.views import FULL_BOX

from .faiss_index import build_faiss, choose_index_type

ARRAY_FILES = {"embeddings": EMBEDDINGS, "global": GLOBAL, "parts": PARTS, "attn": ATTN, "boxes": BOXES}
ARRAY_DTYPES = {"embeddings": np.float32, "global": np.float16, "parts": np.float16, "attn": np.float16,
                "boxes": np.float32}
ENCODED = ("embeddings", "global", "parts", "attn")  # what the model gives per view


class BuildError(RuntimeError):
    pass


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def rel_root(root: Path, out: Path) -> dict:
    """The gallery root relative to the index, so index and gallery move together (and a committed index
    names no path of the machine that built it); absolute only where no relative path exists."""
    root = root.resolve()
    try:
        return {"relative": os.path.relpath(root, out.resolve())}
    except ValueError:  # other drive (Windows)
        return {"relative": None, "absolute": str(root)}


@dataclass
class Piece:
    """Rows (views) `rows` of some source arrays (a chunk or an existing index) that go into the output, in
    order; `counts` says how many of them belong to each of its images."""

    arrays: dict  # name -> array-like (V_src, ...); without "boxes" every row is a full photo
    rows: np.ndarray
    counts: np.ndarray | None = None  # None: one view per image

    def __post_init__(self):
        if self.counts is None:
            self.counts = np.ones(len(self.rows), dtype=np.int64)
        if "boxes" not in self.arrays:
            self.arrays = dict(self.arrays, boxes=np.broadcast_to(np.array(FULL_BOX, np.float32),
                                                                  (len(self.arrays["embeddings"]), 4)))


def write_index(tmp: Path, out: Path, pieces: Sequence[Piece], items: list[dict], manifest: dict,
                index_type: str, progress: bool = True) -> dict:
    """Write arrays, FAISS, items, manifest and skipped.txt into `tmp` (then the caller swaps it in).
    `index_type` may be "auto": chosen by the number of vectors (views), which FAISS holds."""
    n = sum(len(p.rows) for p in pieces)
    counts = np.concatenate([p.counts for p in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    if len(counts) != len(items) or counts.sum() != n:
        raise BuildError(f"internal: {n} rows in {len(counts)} images but {len(items)} items")
    if n == 0:
        raise BuildError("no image could be indexed (all were skipped or the gallery is empty); see the report")
    for name in ENCODED:  # broken weights give NaN rows, which no search can rank: refuse them, write nothing
        bad = sum(int((~np.isfinite(p.arrays[name][p.rows].reshape(len(p.rows), -1)).all(1)).sum()) for p in pieces)
        if bad:
            raise BuildError(f"the model gave non-finite values (NaN or inf) for {bad} of {n} views ({name}): its "
                             f"weights are broken; nothing was written")
    index_type = choose_index_type(n, index_type)
    first = pieces[0].arrays
    outs = {}
    for name, fname in ARRAY_FILES.items():
        shape = (n,) + tuple(first[name].shape[1:])
        outs[name] = np.lib.format.open_memmap(tmp / fname, mode="w+", dtype=ARRAY_DTYPES[name], shape=shape)
    pos, block = 0, 8192
    for p in pieces:
        for s in range(0, len(p.rows), block):
            r = p.rows[s:s + block]
            for name in ARRAY_FILES:
                src = p.arrays[name]
                vals = src[r] if not (len(r) and np.all(np.diff(r) == 1)) else src[r[0]:r[-1] + 1]
                outs[name][pos:pos + len(r)] = vals
            pos += len(r)
    for a in outs.values():
        a.flush()
    del outs
    np.save(tmp / OWNER, np.repeat(np.arange(len(items), dtype=np.int64), counts))
    if index_type == "flat":  # a flat index is the embeddings themselves: GalleryIndex builds it at load
        params = {"type": "flat"}
    else:
        import faiss

        t = time.perf_counter()
        index, params = build_faiss(np.load(tmp / EMBEDDINGS, mmap_mode="r"), index_type, progress=progress)
        faiss.write_index(index, str(tmp / FAISS_FILE))
        params["build_seconds"] = round(time.perf_counter() - t, 2)
    with open(tmp / ITEMS, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    if (tmp / ITEMS).stat().st_size > items_max_bytes(n):  # an index that would not open: say so now
        raise BuildError(f"{ITEMS} would be {(tmp / ITEMS).stat().st_size / 2**20:,.0f} MB, more than an index of "
                         f"{n} views may hold ({items_max_bytes(n) / 2**20:,.0f} MB): shorten the CSV metadata")
    skipped = manifest.get("skipped", [])
    (tmp / SKIPPED).write_text("".join(f"{s['path']}\t{s['error']}\n" for s in skipped))
    cats = sorted({it.get("category", "") for it in items} - {""})
    manifest.update(
        format_version=FORMAT_VERSION, faiss=params,
        counts={"images": len(items), "views": n, "items": len({it["item_id"] for it in items}),
                "skipped": len(skipped), "categories": len(cats)},
        categories=cats,
        arrays={name: {"file": f, "dtype": np.dtype(ARRAY_DTYPES[name]).name,
                       "shape": [n] + list(first[name].shape[1:])} for name, f in ARRAY_FILES.items()},
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_json(tmp / MANIFEST, manifest)
    if (tmp / MANIFEST).stat().st_size > MANIFEST_MAX_BYTES:
        raise BuildError(f"{MANIFEST} would be more than the {MANIFEST_MAX_BYTES / 2**20:,.0f} MB an index may "
                         f"hold ({len(skipped)} files skipped, each listed in it): fix or remove them from the gallery")
    return manifest


def model_manifest(model: MGAModel, weights) -> dict:
    """Which model encoded the vectors; the close-up detector's thousands of weights change no vector, so they stay
    in the checkpoint."""
    config = {k: v for k, v in model.config.to_dict().items() if k != "closeup"}
    return {"fingerprint": model.fingerprint(), "config": config,
            "weights": "embedded default (assets/mga-default)" if weights is None else str(weights)}


