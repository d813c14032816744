"""Gallery folder -> index folder: FAISS over coarse embeddings, items, part/global tokens, attention maps.

Atomic: everything is written into `<out>.tmp-<pid>` and swapped in at the end (old index renamed away, new
renamed in, old deleted), so an interrupted build never loses the index it replaces. Resumable: images are
encoded in chunks, each finished chunk is persisted in the tmp folder and skipped by `--resume`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from mga.devices import feeder_threads, forward_batch, loader_workers, overlap_decoding
from mga.files import owner_alive, recover_folder, swap_in, temp_folders
from mga.index import MANIFEST
from mga.model import MGAModel
from mga.views import ZoomViews

from .decode import THUMBS, EncodeDataset, decoded_batches
from .gallery import Gallery, GalleryEntry, discover_gallery, parse_shard, shard_of
from .packing import PackedEncoder
from .writer import (ARRAY_DTYPES, ARRAY_FILES, ENCODED, BuildError, Piece, model_manifest, rel_root, write_index,
                     write_json)

PLAN = "plan.json"
CHUNKS = "chunks"
DEFAULT_CHUNK = 1024
DEFAULT_THUMB = 0  # thumbnails cost ~3x build throughput on 2 cores (bench_build); opt in with --thumb-size 256

__all__ = ["BuildError", "build_index", "DEFAULT_CHUNK", "DEFAULT_THUMB"]


@dataclass
class Encoding:
    """How the encode loop ran: what the manifest's `build` section reports."""

    seconds: float = 0.0
    waited: float = 0.0  # seconds the loop waited for decoded images
    images: int = 0  # images encoded by this run (not by the run it resumed)
    threads: int = field(default_factory=torch.get_num_threads)  # torch's, while feeding the model

    def report(self) -> dict:
        return {"seconds": None, "encode_seconds": round(self.seconds, 2), "decode_wait_seconds": round(self.waited, 2),
                "images_encoded_now": self.images, "torch_threads": self.threads,
                "images_per_s": round(self.images / self.seconds, 2) if self.images and self.seconds > 0 else None}


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
    recover_folder(out)
    if model is None:
        from mga.hub import load_model

        model = load_model(weights)
    model = model.eval()
    gal = discover_gallery(gallery, csv)
    entries, refused = _select(gal, shard, exclude)
    plan = {"fingerprint": model.fingerprint(), "gallery": str(gal.root.resolve()), "shard": shard,
            "chunk_size": chunk_size, "thumb_size": thumb_size, "fast_decode": fast_decode, "zoom": zoom.to_dict(),
            "paths": hashlib.sha1("\n".join(e.path for e in entries).encode()).hexdigest(), "n": len(entries)}
    tmp, resumed = _build_folder(out, plan, resume, thumb_size > 0, log)
    chunks = [(s, min(len(entries), s + chunk_size)) for s in range(0, len(entries), chunk_size)]
    todo = [c for c in range(len(chunks)) if not _chunk_file(tmp, c).exists()]
    if resumed is not None:
        log(f"resuming {resumed.name}: {len(chunks) - len(todo)} of {len(chunks)} chunks already done")
    device = model.device
    workers = loader_workers(device) if workers is None else workers
    overlap = overlap_decoding(device) if overlap is None else overlap
    batch_size = batch_size or forward_batch(device)  # views per forward
    dataset = EncodeDataset(gal.root, [e.path for e in entries], model.transform.pixels, model.config.image_size,
                            tmp if thumb_size > 0 else None, thumb_size, fast_decode, zoom)
    run = _encode(model, dataset, tmp, chunks, todo, zoom.images_per_batch(batch_size), batch_size, workers,
                  overlap, on_chunk, progress)
    pieces, items, skipped = _assemble(tmp, chunks, entries, refused)
    if skipped:
        log("\n".join(f"skipped {s['path']}: {s['error']}" for s in skipped))
    manifest = {
        "created_by": "index_builder",
        "model": model_manifest(model, weights),
        "source": {"gallery": str(gallery), "kind": gal.kind,
                   "csv": str(csv) if csv else (str(gal.csv) if gal.csv else None), "shard": shard},
        "roots": [rel_root(gal.root, out)],
        "zoom": zoom.to_dict(),
        "skipped": skipped,
        "build": {**run.report(), "batch_size": batch_size, "workers": workers, "overlap_decoding": overlap,
                  "resumed": resumed is not None, "device": str(device), "fast_decode": fast_decode},
    }
    write_index(tmp, out, pieces, items, manifest, index_type, progress)
    manifest["build"]["seconds"] = round(time.perf_counter() - t_start, 2)
    _finish(tmp, out, manifest)
    log(f"indexed {len(items)} images ({len(skipped)} skipped) into {out} [{manifest['faiss']['type']}] in "
        f"{manifest['build']['seconds']:.1f} s")
    return manifest


def _select(gal: Gallery, shard: str | None, exclude: Iterable[str]) -> tuple[list[GalleryEntry], list[dict]]:
    """The gallery's entries (and refused files) of this shard, less the excluded absolute paths."""
    entries, refused = gal.entries, gal.refused
    sh = parse_shard(shard)
    if sh:
        entries = [e for e in entries if shard_of(e.path, sh[1]) == sh[0]]
        refused = [r for r in refused if shard_of(r["path"], sh[1]) == sh[0]]
    excl = set(exclude)
    if excl:
        entries = [e for e in entries if str((gal.root / e.path).resolve()) not in excl]
    return entries, refused


def _build_folder(out: Path, plan: dict, resume: bool, thumbs: bool, log: Callable[[str], None]
                  ) -> tuple[Path, Path | None]:
    """The tmp build folder: a matching unfinished one of a dead build when resuming, else a fresh one; other
    unfinished builds of dead processes are removed. Returns (folder, the build it resumes or None)."""
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    stale = [d for d in temp_folders(out) if d == tmp or not owner_alive(d)]  # ours, or of dead builds
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
    if thumbs:
        (tmp / THUMBS).mkdir(exist_ok=True)
    write_json(tmp / PLAN, plan)
    return tmp, resumed


def _chunk_file(tmp: Path, c: int) -> Path:
    return tmp / CHUNKS / f"chunk-{c:06d}.npz"


def _encode(model: MGAModel, dataset: EncodeDataset, tmp: Path, chunks: list[tuple[int, int]], todo: list[int],
            per_batch: int, batch_size: int, workers: int, overlap: bool,
            on_chunk: Callable[[int, int], None] | None, progress: bool) -> Encoding:
    """Encode the chunks `todo` (packed forwards of `batch_size` views) and save each as soon as it is whole."""
    run, t0 = Encoding(), time.perf_counter()
    if not todo:
        return run
    done = sum(e - s for c, (s, e) in enumerate(chunks) if c not in set(todo))
    batches = [list(range(s, min(e, s + per_batch))) for c in todo for (s0, e) in [chunks[c]]
               for s in range(s0, e, per_batch)]
    bar = tqdm(total=len(dataset), initial=done, desc="index", unit="img", disable=not progress or None,
               dynamic_ncols=True)
    pending: dict[int, list[dict]] = {c: [] for c in todo}
    chunk_size = chunks[0][1] - chunks[0][0]

    def file_away(records: list[dict]) -> None:
        """Encoded records into their chunks; a chunk complete is saved (what --resume starts from)."""
        for b in records:
            c = b["i"] // chunk_size
            pending[c].append(b)
            if len(pending[c]) == chunks[c][1] - chunks[c][0]:
                _save_chunk(_chunk_file(tmp, c), pending.pop(c))
                if on_chunk is not None:
                    on_chunk(len(chunks) - len(pending), len(chunks))

    with torch.inference_mode(), feeder_threads(model.device):
        run.threads = torch.get_num_threads()
        packer = PackedEncoder(model, batch_size)  # forwards of exactly batch_size views, across images
        t_wait = time.perf_counter()
        for batch in decoded_batches(dataset, batches, workers, overlap):
            run.waited += time.perf_counter() - t_wait
            file_away(packer.add(batch))
            bar.update(len(batch))
            run.images += len(batch)
            t_wait = time.perf_counter()
        file_away(packer.flush())
    bar.close()
    run.seconds = time.perf_counter() - t0
    return run


def _assemble(tmp: Path, chunks: list[tuple[int, int]], entries: list[GalleryEntry], refused: list[dict]
              ) -> tuple[list[Piece], list[dict], list[dict]]:
    """The saved chunks as the index's pieces, its items and the skip report."""
    pieces, items, skipped = [], [], list(refused)
    for c in range(len(chunks)):
        z = np.load(_chunk_file(tmp, c), allow_pickle=False)
        ok = z["ok"]
        if ok.any():
            pieces.append(Piece({name: z[name] for name in ARRAY_FILES}, np.arange(len(z["boxes"])), z["views"][ok]))
        for i, good, err, m in zip(z["i"].tolist(), ok.tolist(), json.loads(str(z["errors"])),
                                   json.loads(str(z["meta"]))):
            e = entries[i]
            if not good:
                skipped.append({"path": e.path, "error": err})
                continue
            items.append({"path": e.path, "root": 0, "item_id": e.item_id, "category": e.category,
                          "width": m["w"], "height": m["h"], "thumb": m["thumb"], "meta": e.meta})
    return pieces, items, skipped


def _finish(tmp: Path, out: Path, manifest: dict) -> None:
    """The manifest last, the build's scratch removed, then the folder swapped in for `out`."""
    write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(tmp / CHUNKS, ignore_errors=True)
    (tmp / PLAN).unlink(missing_ok=True)
    if (tmp / THUMBS).is_dir() and not any((tmp / THUMBS).iterdir()):
        (tmp / THUMBS).rmdir()
    swap_in(tmp, out)


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
