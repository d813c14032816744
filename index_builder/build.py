"""Gallery folder -> index folder: items, global and part tokens (the coarse embeddings are rebuilt from them),
attention maps, and FAISS over the coarse embeddings where the gallery is too large for an exact scan.

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
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from mga.files import owner_alive, recover_folder, swap_in, temp_folders
from mga.index_format import DEFAULT_TOKENS, MANIFEST
from mga.model import MGAModel
from mga.views import ZoomViews

from .chunks import CHUNKS, assemble, chunk_file, plan_chunks, save_chunk
from .decode import THUMBS, EncodeDataset
from .gallery import Gallery, GalleryEntry, discover_gallery, parse_shard, shard_of
from .runners import ChunkJob, ChunkRunner, LocalRunner
from .writer import BuildError, model_manifest, rel_root, write_index, write_json

PLAN = "plan.json"
DEFAULT_CHUNK = 1024
DEFAULT_THUMB = 0  # thumbnails slow a CPU build several-fold (docs/benchmarks.md): opt in with --thumb-size 256

__all__ = ["BuildError", "build_index", "DEFAULT_CHUNK", "DEFAULT_THUMB"]


def build_index(gallery: str | Path | Gallery, out: str | Path, model: MGAModel | None = None,
                weights: str | None = None,
                csv: str | Path | None = None, index_type: str = "auto", resume: bool = False,
                shard: str | None = None, batch_size: int | None = None, workers: int | None = None,
                overlap: bool | None = None, runner: ChunkRunner | None = None,
                chunk_size: int = DEFAULT_CHUNK, thumb_size: int = DEFAULT_THUMB, fast_decode: bool = True,
                zoom: ZoomViews = ZoomViews(), exclude: Iterable[str] = (), tokens: str = DEFAULT_TOKENS,
                on_chunk: Callable[[int, int], None] | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Encode every image of `gallery` (a folder, or the images a data set lists: gallery.listed_gallery; each
    its full photo and `zoom` windows) and write the index folder `out`; returns its manifest.

    `runner` encodes the chunks: by default this process (`LocalRunner(batch_size, workers, overlap)`: views
    per forward, decoding processes, decoding beside encoding or in turns; None: the device's way), or a Ray
    cluster (`index_builder.distributed.RayRunner`). `on_chunk(done_chunks, total_chunks)` is called after
    each persisted chunk (tests interrupt a build there). `exclude`: absolute paths not to index (`add`).
    `tokens`: how the index stores the tokens (int8 with scales, or float16: mga.index_format.TOKEN_DTYPES)."""
    t_start = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(out)
    if model is None:
        from mga.hub import load_model

        model = load_model(weights)
    model = model.eval()
    gal = gallery if isinstance(gallery, Gallery) else discover_gallery(gallery, csv)
    for warning in gal.warnings:
        log(f"warning: {warning}")
    entries, refused = _select(gal, shard, exclude)
    plan = {"fingerprint": model.fingerprint(), "gallery": str(gal.root.resolve()), "shard": shard,
            "chunk_size": chunk_size, "thumb_size": thumb_size, "fast_decode": fast_decode, "zoom": zoom.to_dict(),
            "paths": hashlib.sha1("\n".join(e.path for e in entries).encode()).hexdigest(), "n": len(entries)}
    tmp, resumed = _build_folder(out, plan, resume, thumb_size > 0, log)
    job = _chunk_job(model, gal, entries, tmp, plan, zoom, on_chunk)
    if resumed is not None:
        log(f"resuming {resumed.name}: {len(job.chunks) - len(job.todo)} of {len(job.chunks)} chunks already done")
    run = (runner or LocalRunner(batch_size, workers, overlap)).run(job, progress)
    pieces, items, skipped = assemble(tmp, job.chunks, entries, refused)
    if skipped:
        log("\n".join(f"skipped {s['path']}: {s['error']}" for s in skipped))
    manifest = {
        "created_by": "index_builder",
        "model": model_manifest(model, weights),
        "source": {"gallery": str(gal.root if isinstance(gallery, Gallery) else gallery), "kind": gal.kind,
                   "csv": str(csv) if csv else (str(gal.csv) if gal.csv else None), "shard": shard},
        "roots": [rel_root(gal.root, out)],
        "zoom": zoom.to_dict(),
        "skipped": skipped,
        "build": {**run.report(), "resumed": resumed is not None, "device": str(model.device),
                  "fast_decode": fast_decode},
    }
    write_index(tmp, out, pieces, items, manifest, index_type, progress, tokens)
    manifest["build"]["seconds"] = round(time.perf_counter() - t_start, 2)
    _finish(tmp, out, manifest)
    log(f"indexed {len(items)} images ({len(skipped)} skipped) into {out} [{manifest['faiss']['type']}] in "
        f"{manifest['build']['seconds']:.1f} s")
    return manifest


def _chunk_job(model: MGAModel, gal: Gallery, entries: list[GalleryEntry], tmp: Path, plan: dict, zoom: ZoomViews,
               on_chunk: Callable[[int, int], None] | None) -> ChunkJob:
    """The chunks of `entries` still to encode into the build folder `tmp`, and how each is saved there."""
    chunks = plan_chunks(len(entries), plan["chunk_size"])
    todo = [c for c in range(len(chunks)) if not chunk_file(tmp, c).exists()]
    thumbs = plan["thumb_size"] > 0
    dataset = EncodeDataset(gal.root, [e.path for e in entries], model.transform.pixels, model.config.image_size,
                            tmp if thumbs else None, plan["thumb_size"], plan["fast_decode"], zoom)
    saved = [len(chunks) - len(todo)]

    def save(c: int, arrays: dict[str, np.ndarray]) -> None:
        save_chunk(chunk_file(tmp, c), arrays)
        saved[0] += 1
        if on_chunk is not None:
            on_chunk(saved[0], len(chunks))

    return ChunkJob(model, dataset, chunks, todo, save)


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


def _finish(tmp: Path, out: Path, manifest: dict) -> None:
    """The manifest last, the build's scratch removed, then the folder swapped in for `out`."""
    write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(tmp / CHUNKS, ignore_errors=True)
    (tmp / PLAN).unlink(missing_ok=True)
    if (tmp / THUMBS).is_dir() and not any((tmp / THUMBS).iterdir()):
        (tmp / THUMBS).rmdir()
    swap_in(tmp, out)
