"""Editing index folders: merge shards, add a gallery's new images, remove images; each writes a new folder and
swaps it in whole, as a build does."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mga.files import recover_folder, swap_in, temp_folders
from mga.index import GalleryIndex
from mga.index_format import DEFAULT_TOKENS, MANIFEST, TOKEN_DTYPES, GalleryFileError
from mga.model import MGAModel
from mga.stored_rows import CodedRows

from .build import build_index
from .writer import BuildError, Piece, coarse_weight, rel_root, write_index, write_json


def _copy_thumb(ix: GalleryIndex, row: int, dst_dir: Path) -> str | None:
    """Image `row`'s thumbnail into the new index folder: hard-linked (copied where links are not possible), once
    read_image has found it an image file inside the old index folder; None (results show the original) where it
    has none or it is refused."""
    thumb = ix.items[row].get("thumb")
    if not thumb:
        return None
    src, dst = ix.path / thumb, dst_dir / thumb
    if not dst.exists():
        try:
            data = ix.read_image(row, display=True)
        except GalleryFileError:
            return None
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            if src.is_symlink():  # linked inside the old folder: its bytes, not the link, go into the new one
                raise OSError
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            dst.write_bytes(data)
    return thumb


def _real_path(ix: GalleryIndex, row: int) -> str:
    """Image `row`'s file as an absolute path, links resolved: what tells one image in two indexes apart (and what
    `add` and `remove` compare). Only compared, never opened (read_image checks a file when it is read)."""
    it = ix.items[row]
    return os.path.realpath(ix.roots[it.get("root", 0)] / it["path"])


def _compatible(idxs: list[GalleryIndex]) -> list[GalleryIndex]:
    """The indexes, if they can be merged: built with the same weights and the same zoom views."""
    if not idxs:
        raise BuildError("merge needs at least one index folder")
    for what, key in (("weights", lambda ix: ix.fingerprint), ("zoom views", lambda ix: ix.zoom)):
        if len({key(ix) for ix in idxs}) != 1:
            raise BuildError(f"cannot merge indexes built with different {what}: " +
                             ", ".join(f"{ix.path}={key(ix)}" for ix in idxs))
    return idxs


def _gather(idxs: list[GalleryIndex], out: Path, tmp: Path, keep: Callable[[GalleryIndex, int], bool] | None
            ) -> tuple[list[dict], list[Piece], list[dict], list[dict]]:
    """(roots, pieces, items, skip reports) of the merged index; an image in several sources is kept once."""
    roots: list[dict] = []
    root_key: dict[str, int] = {}
    pieces, items, skipped, seen = [], [], [], set()
    for ix in idxs:
        remap = []
        for r, root in zip(ix.manifest.get("roots", []), ix.roots):
            key = str(root.resolve())
            if key not in root_key:
                root_key[key] = len(roots)
                roots.append(rel_root(root, out))
            remap.append(root_key[key])
        rows = []
        for row, it in enumerate(ix.items):
            abs_path = _real_path(ix, row)
            if abs_path in seen or (keep is not None and not keep(ix, row)):
                continue
            seen.add(abs_path)
            rows.append(row)
            it = dict(it, root=remap[it.get("root", 0)], thumb=_copy_thumb(ix, row, tmp))
            items.append(it)
        if rows:
            images = np.asarray(rows, dtype=np.int64)
            pieces.append(Piece({"global": ix.global_, "parts": ix.parts, "attn": ix.attn, "boxes": ix.boxes},
                                ix.view_rows(images),
                                ix.view_count(images)))
        skipped += ix.manifest.get("skipped", [])
    return roots, pieces, items, skipped


def tokens_of(ix: GalleryIndex) -> str:
    """How an index stores its tokens (mga.index_format.TOKEN_DTYPES): formats 1 and 2 in float16."""
    dtype = ix.manifest.get("tokens", {}).get("dtype")
    return dtype if isinstance(ix.global_, CodedRows) and dtype in TOKEN_DTYPES else "float16"


def merge_indexes(out: str | Path, sources: Sequence[str | Path], index_type: str = "auto",
                  keep: Callable[[GalleryIndex, int], bool] | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None, tokens: str | None = None,
                  converting: bool = False) -> dict:
    """Concatenate index folders (shards) built with the same model into `out` (atomically), in the current
    format. `keep(index, row)` filters rows (used by `remove`). An image present in several sources is kept
    once. `tokens`: how the new index stores its tokens (None: as the first source does, so that an edit never
    loses precision; `convert` asks for int8)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(out)
    idxs = _compatible([GalleryIndex(s) for s in sources])
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    roots, pieces, items, skipped = _gather(idxs, out, tmp, keep)
    base = idxs[0].manifest
    tokens = tokens or tokens_of(idxs[0])
    manifest = {
        "created_by": "index_builder " + ("convert" if converting else "merge"),
        "model": base["model"],
        "coarse": {"global_weight": coarse_weight(base)},
        "source": dict(base.get("source", {})) if converting
        else dict(base.get("source", {}), merged_from=[str(s) for s in sources]),
        "roots": roots,
        "zoom": idxs[0].zoom.to_dict(),
        "skipped": skipped,
        "build": {"converted_from": {"format_version": idxs[0].format_version, "tokens": tokens_of(idxs[0]),
                                     "build": base.get("build", {})}} if converting else {"merged": len(idxs)},
    }
    t = time.perf_counter()
    write_index(tmp, out, pieces, items, manifest, index_type, progress, tokens)
    manifest["build"]["seconds"] = round(time.perf_counter() - t, 2)
    write_json(tmp / MANIFEST, manifest)
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
    present = {_real_path(ix, r) for r in range(len(ix))}
    part = index.with_name(f"{index.name}.add-{os.getpid()}")
    try:
        build_index(gallery, part, model=model, weights=weights, csv=csv, exclude=present, index_type="flat",
                    zoom=ix.zoom, tokens=tokens_of(ix), **build_kwargs)
        return merge_indexes(index, [index, part], index_type=index_type, progress=build_kwargs.get("progress", True))
    except BuildError as exc:
        if "no image could be indexed" in str(exc):
            raise BuildError(f"nothing new to add from {gallery}: every image is already in {index} or was "
                             f"skipped") from exc
        raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
        for d in temp_folders(part):
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
            if it["path"] in rel or it["item_id"] in ids or _real_path(ix, r) in absolute}
    if not drop:
        return ix.manifest, 0
    if len(drop) == len(ix):
        raise BuildError("that would remove every image; delete the folder instead")
    del ix
    manifest = merge_indexes(index, [index], index_type=index_type, keep=lambda _ix, r: r not in drop,
                             progress=progress)
    return manifest, len(drop)


def convert_index(index: str | Path, out: str | Path | None = None, tokens: str = DEFAULT_TOKENS,
                  index_type: str = "auto", progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Rewrite an index of any format this code reads (format 2: float32 coarse embeddings, float16 tokens and
    maps) in the current format with `tokens` (int8 or float16): into `out`, or in place (atomically, as every
    edit). Nothing is encoded again: the stored tokens are converted, the coarse embeddings rebuilt from them."""
    return merge_indexes(out or index, [index], index_type=index_type, progress=progress, log=log, tokens=tokens,
                         converting=True)
