"""The build's unit of work and of `--resume`: a chunk of consecutive gallery entries, encoded (by this process
or by a Ray worker, `index_builder.runners`) into one .npz in the build folder, then assembled into the index.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .gallery import GalleryEntry
from .writer import ARRAY_DTYPES, CHUNK_ARRAYS, ENCODED, Piece

CHUNKS = "chunks"
Chunk = tuple[int, int]  # entries [start, end)


def plan_chunks(n: int, chunk_size: int) -> list[Chunk]:
    return [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]


def chunk_file(tmp: Path, c: int) -> Path:
    return tmp / CHUNKS / f"chunk-{c:06d}.npz"


def chunk_arrays(records: list[dict]) -> dict[str, np.ndarray]:
    """A chunk's encoded records (`PackedEncoder` output, any order) as the arrays its file holds: what a Ray
    worker sends back, plain numpy."""
    records = sorted(records, key=lambda b: b["i"])
    good = [b for b in records if b["error"] == ""]
    arrays = {}
    for j, name in enumerate(ENCODED):
        arrays[name] = np.concatenate([b["enc"][j] for b in good]) if good else np.zeros((0,), ARRAY_DTYPES[name])
    arrays["boxes"] = np.array([box for b in good for box in b["boxes"]], dtype=np.float32).reshape(-1, 4)
    return dict(arrays, i=np.array([b["i"] for b in records], dtype=np.int64),
                ok=np.array([b["error"] == "" for b in records]),
                views=np.array([len(b["boxes"]) for b in records], dtype=np.int64),
                errors=np.array(json.dumps([b["error"] for b in records])),
                meta=np.array(json.dumps([{"w": b["w"], "h": b["h"], "thumb": b["thumb"]} for b in records])))


def save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically: a chunk file exists whole or not at all (--resume trusts every file it finds)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def assemble(tmp: Path, chunks: list[Chunk], entries: list[GalleryEntry], refused: list[dict]
             ) -> tuple[list[Piece], list[dict], list[dict]]:
    """The saved chunks as the index's pieces, its items and the skip report."""
    pieces, items, skipped = [], [], list(refused)
    for c in range(len(chunks)):
        z = np.load(chunk_file(tmp, c), allow_pickle=False)
        ok = z["ok"]
        if ok.any():
            pieces.append(Piece({name: z[name] for name in CHUNK_ARRAYS}, np.arange(len(z["boxes"])), z["views"][ok]))
        for i, good, err, m in zip(z["i"].tolist(), ok.tolist(), json.loads(str(z["errors"])),
                                   json.loads(str(z["meta"]))):
            e = entries[i]
            if not good:
                skipped.append({"path": e.path, "error": err})
                continue
            items.append({"path": e.path, "root": 0, "item_id": e.item_id, "category": e.category,
                          "width": m["w"], "height": m["h"], "thumb": m["thumb"], "meta": e.meta})
    return pieces, items, skipped
