"""The index folder's writer: arrays, FAISS, items and manifest into a build folder (then swapped in whole), and
where the gallery root is recorded. The format it writes: mga.index_format."""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mga.config import MGAConfig
from mga.files import atomic_path
from mga.index_format import (BOXES, DEFAULT_TOKENS, FAISS_FILE, FORMAT_VERSION, GLOBAL, GLOBAL_SCALE, ITEMS,
                              MANIFEST, MANIFEST_MAX_BYTES, OWNER, PARTS, PARTS_SCALE, SKIPPED, TOKEN_DTYPES,
                              items_max_bytes)
from mga.model import MGAModel
from mga.stored_rows import CoarseRows, CodedRows, coded_bytes
from mga.views import FULL_BOX

from .faiss_index import build_faiss, choose_index_type

ARRAY_FILES = {"global": GLOBAL, "parts": PARTS, "boxes": BOXES}  # what a format-3 index keeps per view
ARRAY_DTYPES = {"embeddings": np.float32, "global": np.float16, "parts": np.float16, "attn": np.float16,
                "boxes": np.float32}  # as a build's chunks hold them
CHUNK_ARRAYS = ("global", "parts", "attn", "boxes")  # what a chunk holds per view (attn: for older readers' sake)
ENCODED = ("global", "parts", "attn")  # what the model gives per view
SCALE_DTYPE = np.float16
WRITE_BLOCK = 8192  # rows converted and written at a time
_LEVELS = {"int8": 127, "int4": 7, "sqrt4": 15}


def encode(x: np.ndarray, groups: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (..., D) coded in groups of columns ((codec, width), mga.index_format.CODECS): uint8 codes (..., bytes)
    and a float16 scale per vector and group (..., S). A group's scale is its largest magnitude over the codec's
    top code (127, 7; sqrt4: the square root of the largest value over 15), rounded up to float16 so that no code
    passes the top; codes round to the nearest step. mga.stored_rows.decode reads them back."""
    x = np.asarray(x, dtype=np.float32)
    codes, scales, at = [], [], 0
    for codec, width in groups:
        v = x[..., at:at + width]
        at += width
        if codec == "sqrt4":
            v = np.sqrt(np.clip(v, 0, None))  # never negative (encode_groups checks), coded as its square root
        peak = np.abs(v).max(-1, keepdims=True) / _LEVELS[codec]
        scale = peak.astype(SCALE_DTYPE)
        low = scale.astype(np.float32) < peak
        scale[low] = np.nextafter(scale[low], SCALE_DTYPE(np.inf))
        step = scale.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(step > 0, np.rint(v / np.where(step > 0, step, 1)), 0)
        c = np.clip(c, -_LEVELS[codec] if codec != "sqrt4" else 0, _LEVELS[codec])
        if codec == "int8":
            codes.append(c.astype(np.int8).view(np.uint8))
        else:
            nib = (c + 8 if codec == "int4" else c).astype(np.uint8)
            codes.append(nib[..., 0::2] | (nib[..., 1::2] << 4))
        scales.append(scale)
    return np.concatenate(codes, -1), np.concatenate(scales, -1)


def token_groups_for(tokens: str, global_width: int, trained: int | None, part_width: int, nonneg_anchor: bool
                     ) -> dict[str, list[tuple[str, int]]] | None:
    """How a form (mga.index_format.TOKEN_DTYPES) codes a global token of `global_width` (the trained token's `trained`
    columns, then the pretrained anchor's, each group with its own scale: their values differ in size) and a
    part token; None for float16. int4 codes an anchor that is never negative (a GeM of ReLU features) by its
    square root (sqrt4)."""
    if tokens == "float16":
        return None
    small = "int8" if tokens == "int8" else "int4"
    anchor = "sqrt4" if tokens == "int4" and nonneg_anchor else small
    split = trained is not None and 0 < trained < global_width
    glob = [(small, trained), (anchor, global_width - trained)] if split else [(small, global_width)]
    return {"global": glob, "parts": [(small, part_width)]}


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

    arrays: dict  # name -> array-like (V_src, ...): global, parts, attn; without "boxes" every row is a full photo
    rows: np.ndarray
    counts: np.ndarray | None = None  # None: one view per image

    def __post_init__(self):
        if self.counts is None:
            self.counts = np.ones(len(self.rows), dtype=np.int64)
        if "boxes" not in self.arrays:
            self.arrays = dict(self.arrays, boxes=np.broadcast_to(np.array(FULL_BOX, np.float32),
                                                                  (len(self.arrays["global"]), 4)))


def coarse_weight(manifest: dict) -> float:
    """The global token's weight in the coarse embedding (mga.model.coarse_embedding), with which a format-3
    reader rebuilds it: the source's where it had one, else the model's config."""
    weight = manifest.get("coarse", {}).get("global_weight")
    return float(weight) if weight else MGAConfig.from_dict(manifest.get("model", {}).get("config", {})).global_weight


def _source_rows(p: Piece, r: np.ndarray, name: str) -> np.ndarray:
    src = p.arrays[name]
    return np.asarray(src[r] if not (len(r) and np.all(np.diff(r) == 1)) else src[r[0]:r[-1] + 1])


def _blocks(pieces: Sequence[Piece]):
    for p in pieces:
        for s in range(0, len(p.rows), WRITE_BLOCK):
            yield p, p.rows[s:s + WRITE_BLOCK]


def _never_negative(pieces: Sequence[Piece], start: int) -> bool:
    """Whether every global token's columns from `start` on (the pretrained anchor) are >= 0 (one pass)."""
    return all(float(_source_rows(p, r, "global")[:, start:].min(initial=0)) >= 0 for p, r in _blocks(pieces))


def written_coarse(folder: Path, groups: dict | None, weight: float) -> CoarseRows:
    """The coarse embeddings of the tokens just written into `folder`, as the reader rebuilds them: what FAISS
    indexes (so that its vectors are exactly those the engine re-scores with)."""
    def load(name: str) -> np.ndarray:
        return np.load(folder / name, mmap_mode="c")

    glob, parts = load(GLOBAL), load(PARTS)
    if groups:
        glob = CodedRows(glob, load(GLOBAL_SCALE), groups["global"])
        parts = CodedRows(parts, load(PARTS_SCALE), groups["parts"])
    return CoarseRows(glob, parts, weight)


def write_index(tmp: Path, out: Path, pieces: Sequence[Piece], items: list[dict], manifest: dict,
                index_type: str, progress: bool = True, tokens: str = DEFAULT_TOKENS, nlist: int | None = None
                ) -> dict:
    """Write arrays, FAISS, items, manifest and skipped.txt into `tmp` (then the caller swaps it in), in the
    current format (mga.index_format.FORMAT_VERSION). `index_type` may be "auto": chosen by the number of vectors
    (views), which FAISS holds. `tokens`: how the global and part tokens are stored (mga.index_format.TOKEN_DTYPES).
    Neither the coarse embeddings (the reader rebuilds them from the tokens) nor the attention maps are stored: a
    piece's "embeddings" and "attn" are not used. `nlist`: IVF-PQ's lists (default: the builder's, 4 sqrt(N))."""
    if tokens not in TOKEN_DTYPES:
        raise BuildError(f"tokens {tokens!r}: use one of {TOKEN_DTYPES}")
    n = sum(len(p.rows) for p in pieces)
    counts = np.concatenate([p.counts for p in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    if len(counts) != len(items) or counts.sum() != n:
        raise BuildError(f"internal: {n} rows in {len(counts)} images but {len(items)} items")
    if n == 0:
        raise BuildError("no image could be indexed (all were skipped or the gallery is empty); see the report")
    index_type = choose_index_type(n, index_type)
    first = pieces[0].arrays
    shapes = {name: (n,) + tuple(first[name].shape[1:]) for name in ARRAY_FILES}
    width, (k, d) = shapes["global"][1], shapes["parts"][1:]
    trained = manifest.get("model", {}).get("config", {}).get("embed_dim")
    trained = trained if isinstance(trained, int) and 0 < trained < width else None
    groups = token_groups_for(tokens, width, trained, d,
                              tokens == "int4" and trained is not None and _never_negative(pieces, trained))
    weight = coarse_weight(manifest)
    if groups:
        shapes["global"] = (n, coded_bytes(groups["global"]))
        shapes["parts"] = (n, k, coded_bytes(groups["parts"]))
    dtypes = {"global": np.uint8 if groups else np.float16, "parts": np.uint8 if groups else np.float16,
              "boxes": np.float32}
    outs = {name: np.lib.format.open_memmap(tmp / ARRAY_FILES[name], mode="w+", dtype=dtypes[name],
                                            shape=shapes[name]) for name in ARRAY_FILES}
    if groups:
        outs["global_scale"] = np.lib.format.open_memmap(tmp / GLOBAL_SCALE, mode="w+", dtype=SCALE_DTYPE,
                                                         shape=(n, len(groups["global"])))
        outs["parts_scale"] = np.lib.format.open_memmap(tmp / PARTS_SCALE, mode="w+", dtype=SCALE_DTYPE,
                                                        shape=(n, k))
    pos = 0
    for p, r in _blocks(pieces):
        block = {name: _source_rows(p, r, name) for name in ARRAY_FILES}
        for name in ("global", "parts"):  # broken weights give NaN rows, which no search can rank: refuse them
            bad = int((~np.isfinite(block[name].reshape(len(r), -1)).all(1)).sum())
            if bad:
                raise BuildError(f"the model gave non-finite values (NaN or inf) for {bad} views ({name}): its "
                                 f"weights are broken; no index was written")
        end = pos + len(r)
        if groups:
            outs["global"][pos:end], outs["global_scale"][pos:end] = encode(block["global"], groups["global"])
            outs["parts"][pos:end], parts_scale = encode(block["parts"], groups["parts"])
            outs["parts_scale"][pos:end] = parts_scale[..., 0]
        else:
            outs["global"][pos:end], outs["parts"][pos:end] = block["global"], block["parts"]
        outs["boxes"][pos:end] = block["boxes"]
        pos = end
    for a in outs.values():
        a.flush()
    del outs
    owner_dtype = np.int32 if len(items) < 2**31 else np.int64
    np.save(tmp / OWNER, np.repeat(np.arange(len(items), dtype=owner_dtype), counts))
    if index_type == "flat":  # a flat index is rebuilt from the tokens at load (GalleryIndex)
        params = {"type": "flat"}
    else:
        import faiss

        t = time.perf_counter()
        index, params = build_faiss(written_coarse(tmp, groups, weight), index_type, progress=progress, nlist=nlist)
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
    files = dict(ARRAY_FILES, owner=OWNER, **({"global_scale": GLOBAL_SCALE, "parts_scale": PARTS_SCALE}
                                              if groups else {}))
    maps = first.get("attn")
    manifest.update(
        format_version=FORMAT_VERSION, faiss=params,
        counts={"images": len(items), "views": n, "items": len({it["item_id"] for it in items}),
                "skipped": len(skipped), "categories": len(cats)},
        categories=cats,
        tokens={"dtype": tokens, **({key: [list(g) for g in value] for key, value in groups.items()}
                                    if groups else {})},
        coarse={"global_weight": weight, "stored": False},
        maps={"stored": False, **({"shape": list(maps.shape[1:])} if maps is not None and maps.ndim == 4 else {})},
        arrays={name: {"file": f, "dtype": np.load(tmp / f, mmap_mode="r").dtype.name,
                       "shape": list(np.load(tmp / f, mmap_mode="r").shape)} for name, f in files.items()},
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


def disk_bytes(ix) -> dict:
    """What an opened index (mga.index.GalleryIndex) holds on disk: its bytes in all and per photo and per view,
    each file's (per view), and its thumbnails' apart (optional: the app shows originals without them)."""
    files, thumbs = {}, 0
    for path in sorted(ix.path.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(ix.path).as_posix()
            if rel.split("/")[0] == "thumbs":
                thumbs += path.stat().st_size
            else:
                files[rel] = path.stat().st_size
    total, views, photos = sum(files.values()), max(1, ix.views), max(1, len(ix))
    return {"bytes": total, "per_photo": round(total / photos, 1), "per_view": round(total / views, 1),
            "views_per_photo": round(ix.views / photos, 2), "thumbs": thumbs,
            "files": {name: {"bytes": size, "per_view": round(size / views, 1)} for name, size in files.items()}}
