"""The index folder's manifest and items, read and checked before use: every field a reader uses has the type
it expects, every item's path stays inside an existing gallery root, and a damaged or hand-edited file gives an
IndexFormatError that names the file and what is wrong, never a traceback nor silent nonsense. Both are read
through mga.index_files (regular files inside the folder only) under size caps."""
from __future__ import annotations

import gc
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .files import temp_folders
from .index_files import _open_inside, _read_capped, _Refused, bad_path
from .index_format import CODECS, FORMAT_VERSION, INDEX_TYPES, ITEMS, MANIFEST, MANIFEST_MAX_BYTES, IndexFormatError


def _open_index_file(folder: Path, where: Path, name: str) -> tuple | None:
    """(file, stat) of a file of the index folder, opened inside it (no link, a regular file), or None if it is
    missing; IndexFormatError naming `where` for anything else."""
    try:
        f, st, _ = _open_inside(folder, name)
    except _Refused as why:
        if str(why) == "missing":
            return None
        raise IndexFormatError(f"{where}: {why}; an index holds regular files only") from None
    return f, st


def _read_index_file(folder: Path, path: Path, name: str, cap: int) -> bytes | None:
    """A small file of the index folder (manifest, items) read whole, or None if it is missing."""
    opened = _open_index_file(folder, path / name, name)
    if opened is None:
        return None
    f, st = opened
    with f:
        try:
            data = _read_capped(f, st.st_size, cap)
        except OSError as exc:
            raise IndexFormatError(f"{path / name}: unreadable ({exc.strerror or exc})") from None
    if data is None:
        raise IndexFormatError(f"{path / name}: more than the {cap / 2**20:,.0f} MB an index's {name} may hold; "
                               f"damaged, or not an index's file")
    return data


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise IndexFormatError(f"{where}: {what}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _optional(x: Any, kind: type | tuple[type, ...]) -> bool:
    return x is None or isinstance(x, kind)


def _check_manifest(man: str, manifest: dict) -> None:
    """Every field a reader uses has the type it expects, so that a hand-edited manifest stops the start here,
    naming the field, and never becomes a traceback in the middle of a search."""
    for key in ("model", "source", "faiss", "counts", "build", "arrays"):
        _check(isinstance(manifest.get(key, {}), dict), man, f"{key} must be an object")
    _check(_optional(manifest.get("zoom"), dict), man, "zoom must be an object")
    for key in ("skipped", "categories", "roots"):
        _check(isinstance(manifest.get(key, []), list), man, f"{key} must be a list")
    for key in ("built_at", "created_by"):
        _check(isinstance(manifest.get(key, ""), str), man, f"{key} must be a string")
    model = manifest.get("model", {})
    _check(isinstance(model.get("fingerprint", ""), str), man, "model.fingerprint must be a string")
    _check(_optional(model.get("weights"), str), man, "model.weights must be a string")
    _check(isinstance(model.get("config", {}), dict), man, "model.config must be an object")
    source = manifest.get("source", {})
    for key in ("gallery", "csv", "kind", "shard"):
        _check(_optional(source.get(key), str), man, f"source.{key} must be a string")
    faiss = manifest.get("faiss", {})
    _check(faiss.get("type", "flat") in INDEX_TYPES, man, f"faiss.type must be one of {INDEX_TYPES}")
    for key in ("ef_search", "nprobe", "refine"):
        value = faiss.get(key, 1)
        _check(_is_int(value) and value >= 1, man, f"faiss.{key} {value!r:.50} must be a whole number >= 1")
    zoom = manifest.get("zoom") or {}
    unknown = set(zoom) - {"grid", "scale", "min_cover"}
    _check(not unknown, man, f"zoom has unknown fields {sorted(unknown)}")
    _check(_is_int(zoom.get("grid", 0)) and zoom.get("grid", 0) >= 0, man, "zoom.grid must be a whole number >= 0")
    for key in ("scale", "min_cover"):
        _check(_is_number(zoom.get(key, 0)), man, f"zoom.{key} must be a number")
    for key in ("tokens", "coarse", "maps"):
        _check(isinstance(manifest.get(key, {}), dict), man, f"{key} must be an object")
    for key in ("global", "parts"):
        groups = manifest.get("tokens", {}).get(key)
        _check(groups is None or isinstance(groups, list) and 1 <= len(groups) <= 64 and all(
            isinstance(g, list) and len(g) == 2 and g[0] in CODECS and _is_int(g[1]) and g[1] >= 1
            and g[1] * CODECS[g[0]] % 8 == 0 for g in groups), man,
            f"tokens.{key} must list 1 to 64 [codec, width] groups, codecs of {sorted(CODECS)}, whole bytes each")
    if manifest.get("format_version", 1) >= 3:  # its coarse embeddings are rebuilt from the tokens with this
        weight = manifest.get("coarse", {}).get("global_weight")
        _check(_is_number(weight) and 0 < weight <= 1, man, f"coarse.global_weight {weight!r:.50} must be a "
               f"number in (0, 1] (the global token's share of the coarse embedding)")
        maps = manifest.get("maps", {})
        _check(isinstance(maps, dict) and (maps.get("shape") is None or isinstance(maps["shape"], list)
                                           and len(maps["shape"]) == 3
                                           and all(_is_int(x) and 1 <= x <= 4096 for x in maps["shape"])),
               man, "maps.shape must list 3 whole numbers (parts, height, width)")
    counts = manifest.get("counts", {})
    _check(all(_is_int(v) for v in counts.values()), man, "counts must hold whole numbers")
    _check(all(isinstance(s, dict) for s in manifest.get("skipped", [])), man, "skipped must list objects")
    for i, root in enumerate(manifest.get("roots", [])):
        _check(isinstance(root, dict), man, "roots must be a list of objects")
        for key in ("relative", "absolute"):
            _check(_optional(root.get(key), str), man, f"root {i}: {key} must be a string")


def _read_manifest(path: Path, folder: Path) -> dict:
    man = path / MANIFEST
    data = _read_index_file(folder, path, MANIFEST, MANIFEST_MAX_BYTES)
    if data is None:
        unfinished = temp_folders(path) if path.parent.exists() else []
        hint = f" (an unfinished build is in {unfinished[-1].name}; finish it with --resume)" if unfinished else ""
        raise IndexFormatError(f"{path}: no {MANIFEST}; not an MGA index folder{hint}. "
                               f"Build one with: python -m index_builder --gallery GALLERY_DIR --out {path}")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{man}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{man}: must hold a JSON object")
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise IndexFormatError(f"{man}: format_version {version!r:.50} " + (
            f"is newer than this code reads ({FORMAT_VERSION}); update the code or rebuild the index" if newer
            else f"is not a format this code reads (1 to {FORMAT_VERSION})"))
    _check_manifest(str(man), manifest)
    return manifest


def _read_items(path: Path, folder: Path, n_roots: int, cap: int) -> list[dict]:
    """items.jsonl, each line checked: a relative path inside its root, an existing root, no path twice, and the
    fields a search shows of the types it expects."""
    file = path / ITEMS
    data = _read_index_file(folder, path, ITEMS, cap)
    if data is None:
        raise IndexFormatError(f"{file}: missing; rebuild the index")
    try:
        lines = [(n, line) for n, line in enumerate(data.decode("utf-8").splitlines(), 1) if line.strip()]
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{file}: unreadable ({exc})") from None
    del data
    with _no_gc():  # a million small dicts: the collector would walk them again and again while they are made
        items = _parse_lines(file, lines)
        seen: set = set()
        for (number, _), item in zip(lines, items):
            fault = _item_fault(item, n_roots)
            if fault is None:
                key = (item.get("root", 0), item["path"])
                fault = f"{key[1]!r} is listed twice" if key in seen else None
                seen.add(key)
            if fault is not None:  # said with its line only now: a million lines are checked
                raise IndexFormatError(f"{file}, line {number}: {fault}")
    return items


@contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _parse_lines(file: Path, lines: list[tuple[int, str]]) -> list[Any]:
    """The lines' JSON values: parsed as one array (a third faster than line by line, and the objects share
    their keys: 40% less memory at a million lines), or, when that fails or does not give one value per line,
    line by line, for the line at fault."""
    try:
        values = json.loads("[" + ",".join(line for _, line in lines) + "]")
        if isinstance(values, list) and len(values) == len(lines):
            return values
    except (json.JSONDecodeError, RecursionError):
        pass
    values = []
    for number, line in lines:
        try:
            values.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise IndexFormatError(f"{file}, line {number}: not JSON ({str(exc)[:200]})") from None
    raise IndexFormatError(f"{file}: not one JSON value per line")


def _item_fault(item: Any, n_roots: int) -> str | None:
    """What is wrong with one item, if anything: the fields a search reads must be of the types it expects, its
    path relative and inside an existing root."""
    if not isinstance(item, dict):
        return "must be a JSON object"
    root = item.get("root", 0)
    if not _is_int(root) or not 0 <= root < n_roots:
        return f"root {root!r:.50} is not one of the manifest's {n_roots} roots"
    for field in ("path", "thumb"):
        if (field == "path" or item.get(field) is not None) and bad_path(item.get(field)):
            return f"{field} {str(item.get(field))[:200]!r} must be relative and stay inside its folder"
    item_id = item.get("item_id", "")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        return "item_id must be a string"
    if not isinstance(item.get("category", ""), str):
        return "category must be a string"
    if not isinstance(item.get("meta", {}), dict):
        return "meta must be an object"
    for side in ("width", "height"):
        if not (item.get(side) is None or _is_int(item[side]) and item[side] >= 0):
            return f"{side} must be a whole number"
    return None


def _resolve_root(index_dir: Path, i: int, root: dict) -> Path:
    """A gallery root: relative to the index folder (so both move together), else the absolute path the
    builder recorded. Never the file system's root: a gallery is a folder of images."""
    rel, absolute = root.get("relative"), root.get("absolute")
    if "\0" in f"{rel}{absolute}":
        raise IndexFormatError(f"{index_dir / MANIFEST}: root {i} holds a NUL character")
    if isinstance(rel, str) and rel and (index_dir / rel).is_dir():
        path = (index_dir / rel).resolve()
    elif isinstance(absolute, str) and Path(absolute).is_absolute():
        path = Path(absolute).resolve()
    elif isinstance(rel, str) and rel:
        path = (index_dir / rel).resolve()  # a moved gallery: its images will be reported missing
    else:
        raise IndexFormatError(f"{index_dir / MANIFEST}: root {i} names no folder")
    if path == Path(path.anchor):
        raise IndexFormatError(f"{index_dir / MANIFEST}: root {i} is the file system's root, not a gallery")
    return path
