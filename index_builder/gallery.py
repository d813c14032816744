"""Which images a gallery folder holds, and what we know about each (item id, category, CSV columns)."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from mga.data import PARTITION_FILE, category_of, load_retrieval_data
from mga.index_files import IMAGE_SUFFIXES

IMAGE_EXTS = IMAGE_SUFFIXES  # what the index serves is what the builder indexes
CSV_NAMES = ("metadata.csv", "items.csv")  # looked for at the gallery root when --csv is not given
PATH_KEYS = ("path", "image_name", "image", "file", "filename")
# Longest cell of a metadata CSV: Python's csv stops at 128 kB, which a long product description can pass; a row
# with a longer cell is skipped and named by its line (its image is indexed without metadata).
CSV_FIELD_MAX = 2**20


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
    warnings: list[str] = field(default_factory=list)  # what was read around (CSV rows skipped), for the build's log


def read_csv_metadata(path: str | Path, warnings: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Rows of a metadata CSV keyed by the image's path relative to the gallery root (column `path` or
    `image_name`, as in Luma's items.csv). A row that cannot be read (a cell over CSV_FIELD_MAX, a NUL) is skipped,
    with its line number appended to `warnings`; a file that is not UTF-8 text is a ValueError naming it."""
    old_limit = csv.field_size_limit(CSV_FIELD_MAX)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            fields = next(reader, [])
            key = next((k for k in PATH_KEYS if k in fields), None)
            if key is None:
                raise ValueError(f"{path}: a metadata CSV needs a column naming the image path, one of "
                                 f"{PATH_KEYS}; it has {fields}")
            rows = {}
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    if warnings is not None:
                        warnings.append(f"{path}, line {reader.line_num}: {exc}; row skipped")
                    continue
                if not row:
                    continue
                values = dict(zip(fields, row + [None] * (len(fields) - len(row))))  # as csv.DictReader fills them
                rows[_norm(values[key] or "")] = {k: v for k, v in values.items() if k != key}
            return rows
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    finally:
        csv.field_size_limit(old_limit)


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
    warnings: list[str] = []
    meta = read_csv_metadata(csv_path, warnings) if csv_path else {}
    csv_file = Path(csv_path) if csv_path else None
    if (root / PARTITION_FILE).exists():
        data = load_retrieval_data(root)
        return listed_gallery(root, data.format, {r.path: r.item_id for r in data.gallery}, meta, csv_file,
                              warnings)
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    found, refused = _utf8_names(found)
    files, more = screen(root, found)
    return Gallery(root, "folder", [_entry(f, meta) for f in files], csv_file, refused + more, warnings)


def listed_gallery(root: str | Path, kind: str, listed: dict[str, str], meta: dict[str, dict[str, str]] | None = None,
                   csv_file: Path | None = None, warnings: list[str] | None = None) -> Gallery:
    """The images a data set lists (path relative to `root` -> item id), screened as any gallery's are: a data
    set's gallery split, or the photos an evaluation indexes as a shop."""
    root = Path(root)
    files, refused = screen(root, list(listed))
    return Gallery(root, kind, [_entry(f, meta or {}, listed[f]) for f in files], csv_file, refused, warnings or [])


def _utf8_names(paths: list[str]) -> tuple[list[str], list[dict]]:
    """The paths whose names are UTF-8 (what an index, its JSON files and a browser can name), and the others
    refused, named with their bytes escaped ('\\xff.jpg')."""
    ok, refused = [], []
    for rel in paths:
        try:
            rel.encode("utf-8")
            ok.append(rel)
        except UnicodeEncodeError:  # os.fsdecode kept the undecodable bytes as surrogates
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            refused.append({"path": shown, "error": "its name is not UTF-8 (rename the file to index it)"})
    return ok, refused


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
