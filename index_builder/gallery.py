"""Which images a gallery folder holds, and what we know about each (item id, category, CSV columns)."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from mga.data import PARTITION_FILE, category_of, load_retrieval_data

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CSV_NAMES = ("metadata.csv", "items.csv")  # looked for at the gallery root when --csv is not given
PATH_KEYS = ("path", "image_name", "image", "file", "filename")


@dataclass
class GalleryEntry:
    path: str  # relative to the gallery root, POSIX separators
    item_id: str
    category: str
    meta: dict = field(default_factory=dict)  # the other CSV columns


@dataclass
class Gallery:
    root: Path
    kind: str  # "folder" | "inshop" | "consumer2shop"
    entries: list[GalleryEntry]
    csv: Path | None = None
    refused: list[dict] = field(default_factory=list)  # {"path", "error"}: found but not an image file in the gallery


def read_csv_metadata(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a metadata CSV keyed by the image's path relative to the gallery root (column `path` or
    `image_name`, as in Luma's items.csv)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        key = next((k for k in PATH_KEYS if k in fields), None)
        if key is None:
            raise ValueError(f"{path}: a metadata CSV needs a column naming the image path, one of {PATH_KEYS}; "
                             f"it has {fields}")
        return {_norm(row[key]): {k: v for k, v in row.items() if k != key and k is not None} for row in reader}


def _norm(path: str) -> str:
    path = path.strip().replace("\\", "/")
    return path[2:] if path.startswith("./") else path


def _entry(path: str, meta: dict[str, dict[str, str]], item_id: str | None = None) -> GalleryEntry:
    row = dict(meta.get(path, {}))
    default_cat = category_of(path)
    item = item_id or row.pop("item_id", "") or path.rsplit(".", 1)[0]
    row.pop("item_id", None)
    category = row.pop("category", "") or default_cat
    return GalleryEntry(path, str(item), str(category), {k: v for k, v in row.items() if v not in (None, "")})


def discover_gallery(src: str | Path, csv_path: str | Path | None = None) -> Gallery:
    """A plain folder of images (any depth), or a DeepFashion In-shop / Consumer-to-shop data set (its gallery
    split / test shop photos), recognised by Eval/list_eval_partition.txt."""
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such gallery folder")
    if csv_path is None:
        csv_path = next((root / n for n in CSV_NAMES if (root / n).exists()), None)
    meta = read_csv_metadata(csv_path) if csv_path else {}
    csv_file = Path(csv_path) if csv_path else None
    if (root / PARTITION_FILE).exists():
        data = load_retrieval_data(root)
        listed = {r.path: r.item_id for r in data.gallery}
        files, refused = screen(root, list(listed))
        return Gallery(root, data.format, [_entry(f, meta, listed[f]) for f in files], csv_file, refused)
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    files, refused = screen(root, found)
    return Gallery(root, "folder", [_entry(f, meta) for f in files], csv_file, refused)


def screen(root: Path, paths: list[str]) -> tuple[list[str], list[dict]]:
    """The paths that are image files inside `root`, and why each other one is refused: a folder named like an
    image, a broken link or a link loop, a link to a file outside the gallery (which an index would then serve)."""
    inside, ok, refused = root.resolve(), [], []
    for rel in paths:
        path = root / rel
        try:
            target = path.resolve(strict=True)
        except RuntimeError:
            refused.append({"path": rel, "error": "a link loop"})
            continue
        except OSError:
            refused.append({"path": rel, "error": "missing, or a broken link"})
            continue
        if not target.is_relative_to(inside):
            refused.append({"path": rel, "error": "a link to a file outside the gallery"})
        elif not target.is_file():
            refused.append({"path": rel, "error": "not a file (a folder named like an image?)"})
        else:
            ok.append(rel)
    return ok, refused



def shard_of(path: str, num_shards: int) -> int:
    """Deterministic shard of a relative path (stable across machines and Python runs)."""
    return int(hashlib.sha1(path.encode()).hexdigest()[:12], 16) % num_shards


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """'i/N' -> (i, N) with 0 <= i < N."""
    if not spec:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {spec!r}: need 0 <= i < N")
    return i, n
