"""Gallery folder -> index folder: FAISS over coarse embeddings, items, part/global tokens, attention maps.

Atomic: everything is written into `<out>.tmp-<pid>` and swapped in at the end (old index renamed away, new
renamed in, old deleted), so an interrupted build never loses the index it replaces. Resumable: images are
encoded in chunks, each finished chunk is persisted in the tmp folder and skipped by `--resume`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mga.config import BURST_IMAGES
from mga.devices import feeder_threads, forward_batch, loader_workers, overlap_decoding
from mga.files import atomic_path
from mga.imageio import ImageError, load_image
from mga.model import MGAModel
from mga.transforms import working_side
from mga.index import (ATTN, BOXES, EMBEDDINGS, FAISS_FILE, FORMAT_VERSION, GLOBAL, ITEMS, MANIFEST, OWNER, PARTS,
                        SKIPPED, GalleryIndex)
from mga.views import FULL_BOX, ZoomViews

from .faiss_index import build_faiss, choose_index_type
from .gallery import Gallery, GalleryEntry, discover_gallery, parse_shard, shard_of
from .packing import PackedEncoder

PLAN = "plan.json"
CHUNKS = "chunks"
THUMBS = "thumbs"
DEFAULT_CHUNK = 1024
DEFAULT_THUMB = 0  # thumbnails cost ~3x build throughput on 2 cores (bench_build); opt in with --thumb-size 256
ARRAY_FILES = {"embeddings": EMBEDDINGS, "global": GLOBAL, "parts": PARTS, "attn": ATTN, "boxes": BOXES}
ARRAY_DTYPES = {"embeddings": np.float32, "global": np.float16, "parts": np.float16, "attn": np.float16,
                "boxes": np.float32}
ENCODED = ("embeddings", "global", "parts", "attn")  # what the model gives per view


class BuildError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ decoding
def thumb_name(abs_path: str) -> str:
    return f"{THUMBS}/{hashlib.sha1(abs_path.encode()).hexdigest()[:20]}.jpg"


class EncodeDataset(Dataset):
    """Entry index -> dict(views (V, 3, S, S) uint8 pixels | None, their boxes, size, thumb, error). A bad file
    yields its ImageError message."""

    def __init__(self, root: Path, paths: Sequence[str], transform: Callable, image_size: int,
                 thumb_dir: Path | None, thumb_size: int, fast_decode: bool = True, zoom: ZoomViews = ZoomViews()):
        self.root, self.paths, self.transform, self.zoom = Path(root), list(paths), transform, zoom
        self.image_size, self.thumb_dir, self.thumb_size, self.fast = image_size, thumb_dir, thumb_size, fast_decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.root / self.paths[i]
        try:
            side = max(working_side(self.image_size), self.thumb_size if self.thumb_dir else 0)
            # problems end in ImageError, which names the image as the gallery does (no server path in reports)
            img = load_image(path, name=self.paths[i], max_side=side if self.fast else None)
            w, h = img.info["original_size"]
            thumb = None
            if self.thumb_dir is not None and max(w, h) > self.thumb_size * 1.25:
                thumb = thumb_name(str(path.resolve()))
                dst = self.thumb_dir / thumb
                if not dst.exists():
                    small = img.copy()
                    small.thumbnail((self.thumb_size, self.thumb_size), Image.BICUBIC)
                    with atomic_path(dst) as tmp:
                        small.save(tmp, "JPEG", quality=85)
            boxes, views = self.zoom.tensors(img, self.transform)
            return {"i": i, "x": views, "boxes": boxes, "w": w, "h": h, "thumb": thumb, "error": ""}
        except ImageError as exc:
            return {"i": i, "x": None, "boxes": [], "w": 0, "h": 0, "thumb": None, "error": str(exc)}
        except Exception as exc:  # never abort a build for one file
            return {"i": i, "x": None, "boxes": [], "w": 0, "h": 0, "thumb": None,
                    "error": f"{self.paths[i]}: {type(exc).__name__}: {exc}"}


def _collate(batch: list[dict]) -> list[dict]:
    return batch


def _background_worker(_: int = 0) -> None:
    """Decoding runs at the lowest priority: where the model already uses every core (a CPU build), the
    workers then fill its idle moments instead of preempting its threads mid-operation (bench_build: encode
    loop / bare forwards 0.62 -> 0.89 with full photos, 0.74 -> 0.87 with zoom views, on 2 cores)."""
    if hasattr(os, "nice"):  # POSIX
        os.nice(19)


_BURST_DATASET: EncodeDataset | None = None  # a burst decoder's dataset (set in each pool process)


def _burst_worker(dataset: EncodeDataset) -> None:
    global _BURST_DATASET
    _BURST_DATASET = dataset
    torch.set_num_threads(1)  # a forked process must not enter the parent's OpenMP pool (it would hang)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the build in its main process, which ends the pool
    _background_worker()


def _burst_decode(i: int) -> dict:
    return _BURST_DATASET[i]


def decoded_batches(dataset: EncodeDataset, batches: list[list[int]], workers: int, overlap: bool,
                    burst_images: int = BURST_IMAGES) -> Iterator[list[dict]]:
    """The decoded records of each batch of `batches`, in order.

    overlap: DataLoader workers decode ahead while the model encodes (a GPU, whose feeding is the bottleneck).
    Otherwise (a CPU build, whose model threads already use every core) decoding and encoding take turns: the
    workers decode the next `burst_images` images while the model waits, then sit idle while it encodes them.
    Decoders running beside the model's forwards slow them down far more than their own CPU time (bench_build,
    2 cores: they cost the model ~3x it), so the turns are faster overall."""
    if overlap or workers == 0:
        yield from DataLoader(dataset, batch_sampler=batches, collate_fn=_collate, num_workers=workers,
                              prefetch_factor=4 if workers > 0 else None, worker_init_fn=_background_worker)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_burst_worker, initargs=(dataset,)) as pool:
        start = 0
        while start < len(batches):
            end, images = start, 0
            while end < len(batches) and images < burst_images:
                images += len(batches[end])
                end += 1
            records = iter(pool.map(_burst_decode, [i for b in batches[start:end] for i in b], chunksize=1))
            for b in batches[start:end]:
                yield [next(records) for _ in b]
            start = end


# ------------------------------------------------------------------------------------------------ folders
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_dirs(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.tmp-*"), key=lambda p: p.stat().st_mtime)


def _pid_of(d: Path) -> int:
    try:
        return int(d.name.rsplit("-", 1)[1])
    except ValueError:
        return 0


def _recover(out: Path) -> None:
    """A crash between the two renames of a swap leaves only `<out>.old-<pid>`: put it back."""
    if not out.exists():
        olds = sorted(out.parent.glob(f"{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if olds and (olds[-1] / MANIFEST).exists():
            os.rename(olds[-1], out)


def swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` with two renames; the old index is deleted only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _rel_root(root: Path, out: Path) -> dict:
    """The gallery root relative to the index, so index and gallery move together (and a committed index
    names no path of the machine that built it); absolute only where no relative path exists."""
    root = root.resolve()
    try:
        return {"relative": os.path.relpath(root, out.resolve())}
    except ValueError:  # other drive (Windows)
        return {"relative": None, "absolute": str(root)}


# ------------------------------------------------------------------------------------------------ writing
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
    _write_json(tmp / MANIFEST, manifest)
    return manifest


def _model_manifest(model: MGAModel, weights) -> dict:
    return {"fingerprint": model.fingerprint(), "config": model.config.to_dict(),
            "weights": "embedded default (assets/mga-default)" if weights is None else str(weights)}


# ------------------------------------------------------------------------------------------------ build
def build_index(gallery: str | Path, out: str | Path, model: MGAModel | None = None, weights: str | None = None,
                csv: str | Path | None = None, index_type: str = "auto", resume: bool = False,
                shard: str | None = None, batch_size: int | None = None, workers: int | None = None,
                overlap: bool | None = None,
                chunk_size: int = DEFAULT_CHUNK, thumb_size: int = DEFAULT_THUMB, fast_decode: bool = True,
                zoom: ZoomViews = ZoomViews(), exclude: Iterable[str] = (),
                on_chunk: Callable[[int, int], None] | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Encode every image of `gallery` (its full photo and `zoom` windows) and write the index folder `out`;
    returns its manifest.

    `on_chunk(done_chunks, total_chunks)` is called after each persisted chunk (tests interrupt a build there).
    `exclude`: absolute paths not to index (used by `add`). `overlap`: decode beside encoding or in turns
    with it (`decoded_batches`; None: the device's way)."""
    t_start = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)
    if model is None:
        from mga.hub import load_model

        model = load_model(weights)
    model.eval()
    gal: Gallery = discover_gallery(gallery, csv)
    entries: list[GalleryEntry] = gal.entries
    refused = gal.refused
    sh = parse_shard(shard)
    if sh:
        entries = [e for e in entries if shard_of(e.path, sh[1]) == sh[0]]
        refused = [r for r in refused if shard_of(r["path"], sh[1]) == sh[0]]
    excl = set(exclude)
    if excl:
        entries = [e for e in entries if str((gal.root / e.path).resolve()) not in excl]
    fp = model.fingerprint()
    cfg = model.config
    use_thumbs = thumb_size > 0
    plan = {"fingerprint": fp, "gallery": str(gal.root.resolve()), "shard": shard, "chunk_size": chunk_size,
            "thumb_size": thumb_size, "fast_decode": fast_decode, "zoom": zoom.to_dict(),
            "paths": hashlib.sha1("\n".join(e.path for e in entries).encode()).hexdigest(), "n": len(entries)}

    # the tmp build folder: resume a matching unfinished one, or start fresh
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    stale = [d for d in _tmp_dirs(out) if d == tmp or not _pid_alive(_pid_of(d))]  # ours, or of dead builds
    resumed = None
    if resume:
        for d in reversed(stale):
            try:
                if json.loads((d / PLAN).read_text()) == plan:
                    resumed = d
                    break
            except (OSError, ValueError):
                continue
        if resumed is None:
            log("--resume: no unfinished build of this gallery with these weights and settings; starting fresh")
    for d in stale:
        if d != resumed:
            log(f"removing unfinished build {d} (it was not resumed)")
            shutil.rmtree(d, ignore_errors=True)
    if tmp.exists() and resumed != tmp:
        shutil.rmtree(tmp)
    if resumed is not None and resumed != tmp:
        os.rename(resumed, tmp)
    (tmp / CHUNKS).mkdir(parents=True, exist_ok=True)
    if use_thumbs:
        (tmp / THUMBS).mkdir(exist_ok=True)
    _write_json(tmp / PLAN, plan)

    n = len(entries)
    chunks = [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]
    chunk_file = lambda c: tmp / CHUNKS / f"chunk-{c:06d}.npz"  # noqa: E731
    todo = [c for c in range(len(chunks)) if not chunk_file(c).exists()]
    if resumed is not None:
        log(f"resuming {resumed.name}: {len(chunks) - len(todo)} of {len(chunks)} chunks already done")
    done_images = sum(chunks[c][1] - chunks[c][0] for c in range(len(chunks)) if c not in set(todo))
    device = model.device
    workers = loader_workers(device) if workers is None else workers
    overlap = overlap_decoding(device) if overlap is None else overlap
    batch_size = batch_size or forward_batch(device)  # views per forward
    t_enc, waited = time.perf_counter(), 0.0  # waited: the encode loop's seconds waiting for decoded images
    encoded_now, threads = 0, torch.get_num_threads()  # threads: torch's, while feeding the model
    if todo:
        ds = EncodeDataset(gal.root, [e.path for e in entries], model.transform.pixels, cfg.image_size,
                           tmp if use_thumbs else None, thumb_size, fast_decode, zoom)
        per_batch = zoom.images_per_batch(batch_size)
        batches = [list(range(s, min(e, s + per_batch))) for c in todo for (s0, e) in [chunks[c]]
                   for s in range(s0, e, per_batch)]
        bar = tqdm(total=n, initial=done_images, desc="index", unit="img", disable=not progress or None,
                   dynamic_ncols=True)
        pending = {c: [] for c in todo}

        def file_away(records: list[dict]) -> None:
            """Encoded records into their chunks; a chunk complete is saved (what --resume starts from)."""
            for b in records:
                c = b["i"] // chunk_size
                pending[c].append(b)
                if len(pending[c]) == chunks[c][1] - chunks[c][0]:
                    _save_chunk(chunk_file(c), pending.pop(c))
                    if on_chunk is not None:
                        on_chunk(len(chunks) - len(pending), len(chunks))

        with torch.inference_mode(), feeder_threads(device):
            threads = torch.get_num_threads()
            packer = PackedEncoder(model, batch_size)  # forwards of exactly batch_size views, across images
            t_wait = time.perf_counter()
            for batch in decoded_batches(ds, batches, workers, overlap):
                waited += time.perf_counter() - t_wait
                file_away(packer.add(batch))
                bar.update(len(batch))
                encoded_now += len(batch)
                t_wait = time.perf_counter()
            file_away(packer.flush())
        bar.close()
    encode_s = time.perf_counter() - t_enc

    # assemble the final folder from the chunks
    pieces, items, skipped = [], [], list(refused)
    root_entry = _rel_root(gal.root, out)
    for c in range(len(chunks)):
        z = np.load(chunk_file(c), allow_pickle=False)
        idx, ok = z["i"], z["ok"]
        errors = json.loads(str(z["errors"]))
        meta = json.loads(str(z["meta"]))
        if ok.any():
            pieces.append(Piece({name: z[name] for name in ARRAY_FILES}, np.arange(len(z["boxes"])),
                                z["views"][ok]))
        for i, good, err, m in zip(idx.tolist(), ok.tolist(), errors, meta):
            e = entries[i]
            if not good:
                skipped.append({"path": e.path, "error": err})
                continue
            items.append({"path": e.path, "root": 0, "item_id": e.item_id, "category": e.category,
                          "width": m["w"], "height": m["h"], "thumb": m["thumb"], "meta": e.meta})
    for s in skipped:
        log(f"skipped {s['path']}: {s['error']}")
    manifest = {
        "created_by": "index_builder",
        "model": _model_manifest(model, weights),
        "source": {"gallery": str(gallery), "kind": gal.kind,
                   "csv": str(csv) if csv else (str(gal.csv) if gal.csv else None), "shard": shard},
        "roots": [root_entry],
        "zoom": zoom.to_dict(),
        "skipped": skipped,
        "build": {"seconds": None, "encode_seconds": round(encode_s, 2), "decode_wait_seconds": round(waited, 2),
                  "images_encoded_now": encoded_now,
                  "images_per_s": round(encoded_now / encode_s, 2) if encoded_now and encode_s > 0 else None,
                  "batch_size": batch_size, "workers": workers, "overlap_decoding": overlap,
                  "resumed": resumed is not None,
                  "device": str(device), "torch_threads": threads, "fast_decode": fast_decode},
    }
    write_index(tmp, out, pieces, items, manifest, index_type, progress)
    manifest["build"]["seconds"] = round(time.perf_counter() - t_start, 2)
    _write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(tmp / CHUNKS, ignore_errors=True)
    (tmp / PLAN).unlink(missing_ok=True)
    if use_thumbs and not any((tmp / THUMBS).iterdir()):
        (tmp / THUMBS).rmdir()
    swap_in(tmp, out)
    log(f"indexed {len(items)} images ({len(skipped)} skipped) into {out} [{manifest['faiss']['type']}] in "
        f"{manifest['build']['seconds']:.1f} s")
    return manifest


def _save_chunk(path: Path, records: list[dict]) -> None:
    records = sorted(records, key=lambda b: b["i"])
    good = [b for b in records if b["error"] == ""]
    arrays = {}
    for j, name in enumerate(ENCODED):
        arrays[name] = np.concatenate([b["enc"][j] for b in good]) if good else np.zeros((0,), ARRAY_DTYPES[name])
    arrays["boxes"] = np.array([box for b in good for box in b["boxes"]], dtype=np.float32).reshape(-1, 4)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, i=np.array([b["i"] for b in records], dtype=np.int64),
             ok=np.array([b["error"] == "" for b in records]),
             views=np.array([len(b["boxes"]) for b in records], dtype=np.int64),
             errors=np.array(json.dumps([b["error"] for b in records])),
             meta=np.array(json.dumps([{"w": b["w"], "h": b["h"], "thumb": b["thumb"]} for b in records])),
             **arrays)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ merge / edit
def _copy_thumb(src_dir: Path, dst_dir: Path, thumb: str | None) -> str | None:
    if not thumb:
        return None
    src, dst = src_dir / thumb, dst_dir / thumb
    if not src.exists():
        return None
    dst.parent.mkdir(exist_ok=True)
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return thumb


def merge_indexes(out: str | Path, sources: Sequence[str | Path], index_type: str = "auto",
                  keep: Callable[[GalleryIndex, int], bool] | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> dict:
    """Concatenate index folders (shards) built with the same model into `out` (atomically). `keep(index, row)`
    filters rows (used by `remove`). An image present in several sources is kept once."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)
    idxs = [GalleryIndex(s) for s in sources]
    if not idxs:
        raise BuildError("merge needs at least one index folder")
    fps = {ix.fingerprint for ix in idxs}
    if len(fps) != 1:
        raise BuildError("cannot merge indexes built with different weights: " +
                         ", ".join(f"{ix.path}={ix.fingerprint}" for ix in idxs))
    zooms = {ix.zoom for ix in idxs}
    if len(zooms) != 1:
        raise BuildError("cannot merge indexes built with different zoom views: " +
                         ", ".join(f"{ix.path}={ix.zoom}" for ix in idxs))
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    roots: list[dict] = []
    root_key: dict[str, int] = {}
    pieces, items, skipped, seen = [], [], [], set()
    for ix in idxs:
        remap = []
        for r, root in zip(ix.manifest.get("roots", []), ix.roots):
            key = str(root.resolve())
            if key not in root_key:
                root_key[key] = len(roots)
                roots.append(_rel_root(root, out))
            remap.append(root_key[key])
        rows = []
        for row, it in enumerate(ix.items):
            abs_path = str(ix.image_path(row).resolve())
            if abs_path in seen or (keep is not None and not keep(ix, row)):
                continue
            seen.add(abs_path)
            rows.append(row)
            it = dict(it, root=remap[it.get("root", 0)], thumb=_copy_thumb(ix.path, tmp, it.get("thumb")))
            items.append(it)
        if rows:
            images = np.asarray(rows, dtype=np.int64)
            pieces.append(Piece({"embeddings": ix.embeddings, "global": ix.global_, "parts": ix.parts,
                                 "attn": ix.attn, "boxes": ix.boxes}, ix.view_rows(images),
                                ix.view_count(images)))
        skipped += ix.manifest.get("skipped", [])
    base = idxs[0].manifest
    manifest = {
        "created_by": "index_builder merge",
        "model": base["model"],
        "source": dict(base.get("source", {}), merged_from=[str(s) for s in sources]),
        "roots": roots,
        "zoom": idxs[0].zoom.to_dict(),
        "skipped": skipped,
        "build": {"merged": len(idxs)},
    }
    t = time.perf_counter()
    write_index(tmp, out, pieces, items, manifest, index_type, progress)
    manifest["build"]["seconds"] = round(time.perf_counter() - t, 2)
    _write_json(tmp / MANIFEST, manifest)
    del idxs, pieces
    swap_in(tmp, out)
    log(f"wrote {len(items)} images into {out} [{manifest['faiss']['type']}]")
    return manifest


def add_to_index(index: str | Path, gallery: str | Path, csv: str | Path | None = None,
                 weights: str | None = None, model: MGAModel | None = None, index_type: str = "auto",
                 **build_kwargs) -> dict:
    """Encode the images of `gallery` not yet in `index` and merge them in (atomically)."""
    index = Path(index)
    ix = GalleryIndex(index)
    if model is None:
        from mga.hub import load_model

        model = load_model(weights)
    if model.fingerprint() != ix.fingerprint:
        raise BuildError(f"{index} was built with model {ix.fingerprint}, these weights are {model.fingerprint()}; "
                         "rebuild the whole index instead of adding to it")
    present = {str(ix.image_path(r).resolve()) for r in range(len(ix))}
    part = index.with_name(f"{index.name}.add-{os.getpid()}")
    try:
        build_index(gallery, part, model=model, weights=weights, csv=csv, exclude=present, index_type="flat",
                    zoom=ix.zoom, **build_kwargs)
        return merge_indexes(index, [index, part], index_type=index_type, progress=build_kwargs.get("progress", True))
    except BuildError as exc:
        if "no image could be indexed" in str(exc):
            raise BuildError(f"nothing new to add from {gallery}: every image is already in {index} or was "
                             f"skipped") from exc
        raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
        for d in _tmp_dirs(part):
            shutil.rmtree(d, ignore_errors=True)


def remove_from_index(index: str | Path, paths: Sequence[str] = (), item_ids: Sequence[str] = (),
                      index_type: str = "auto", progress: bool = True) -> tuple[dict, int]:
    """Drop images by path (relative to their gallery root, or absolute) or by item id; returns
    (manifest, number removed)."""
    index = Path(index)
    ix = GalleryIndex(index)
    rel = {p.replace("\\", "/") for p in paths}
    absolute = {str(Path(p).resolve()) for p in paths}
    ids = set(item_ids)
    drop = {r for r, it in enumerate(ix.items)
            if it["path"] in rel or it["item_id"] in ids or str(ix.image_path(r).resolve()) in absolute}
    if not drop:
        return ix.manifest, 0
    if len(drop) == len(ix):
        raise BuildError("that would remove every image; delete the folder instead")
    del ix
    manifest = merge_indexes(index, [index], index_type=index_type, keep=lambda _ix, r: r not in drop,
                             progress=progress)
    return manifest, len(drop)
