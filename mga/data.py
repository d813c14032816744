"""Data sets in the DeepFashion layouts (In-shop, Consumer-to-shop): their partition into query, gallery and
training photos, and the garment category a photo's path names (what the index builder records)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


PARTITION_FILE = Path("Eval") / "list_eval_partition.txt"


@dataclass(frozen=True)
class Record:
    """One image of a retrieval data set: its path relative to the data root, item id and split role."""

    path: str
    item_id: str
    split: str  # train / query / gallery (In-shop); train / val / test plus consumer|shop (C2S)


@dataclass(frozen=True)
class RetrievalData:
    """A data set read from its partition file: training records and the evaluation protocol's two sides."""

    root: Path
    format: str  # "inshop" | "consumer2shop"
    train: list[Record]
    query: list[Record]
    gallery: list[Record]


def _partition_rows(root: Path) -> list[list[str]]:
    path = root / PARTITION_FILE
    if not path.exists():
        raise FileNotFoundError(f"{root}: no {PARTITION_FILE}; expected a DeepFashion In-shop or Consumer-to-shop "
                                f"layout")
    lines = path.read_text().splitlines()
    # line 1: the count, line 2: the header, then one row per image (In-shop) or pair (C2S)
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if lines and lines[0].strip().isdigit() and int(lines[0]) != len(rows):
        raise ValueError(f"{path}: header says {lines[0].strip()} rows, file has {len(rows)}")
    return rows


def detect_format(root: str | Path) -> str:
    """'inshop' (3 columns) or 'consumer2shop' (4 columns), read off the partition file's header."""
    header = (Path(root) / PARTITION_FILE).read_text().splitlines()[1].split()
    if len(header) == 3:
        return "inshop"
    if len(header) == 4:
        return "consumer2shop"
    raise ValueError(f"{root}: partition header {header} is neither In-shop nor Consumer-to-shop")


def _unique(records: list[Record]) -> list[Record]:
    seen, out = set(), []
    for r in records:
        if r.path not in seen:
            seen.add(r.path)
            out.append(r)
    return out


def load_inshop(root: str | Path) -> RetrievalData:
    root = Path(root)
    records = [Record(path, item, status) for path, item, status in _partition_rows(root)]
    by = {s: [r for r in records if r.split == s] for s in ("train", "query", "gallery")}
    return RetrievalData(root, "inshop", by["train"], by["query"], by["gallery"])


def load_consumer2shop(root: str | Path, eval_split: str = "test") -> RetrievalData:
    """Training uses both photos of every train pair; evaluation queries `eval_split` consumer photos
    against that split's shop photos, the standard protocol."""
    root = Path(root)
    rows = _partition_rows(root)
    train = [Record(p, item, "train") for c, s, item, status in rows if status == "train" for p in (c, s)]
    query = [Record(c, item, "query") for c, s, item, status in rows if status == eval_split]
    gallery = [Record(s, item, "gallery") for c, s, item, status in rows if status == eval_split]
    return RetrievalData(root, "consumer2shop", _unique(train), _unique(query), _unique(gallery))


def load_retrieval_data(root: str | Path, fmt: str | None = None) -> RetrievalData:
    fmt = fmt or detect_format(root)
    loaders = {"inshop": load_inshop, "consumer2shop": load_consumer2shop}
    if fmt not in loaders:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(loaders)}")
    return loaders[fmt](root)


def category_of(path: str) -> str:
    """The category a data-set path names: DeepFashion's img/<GENDER>/<Category>/id_x/file.jpg, else the folder."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "img":
        return parts[2]
    return parts[-2] if len(parts) >= 2 else ""


def category_key(category: str) -> str:
    """One spelling per category: "Hoodies & Sweatshirts", "Hoodies_Sweatshirts" and "hoodies sweatshirts" agree."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", category.lower()).split())
