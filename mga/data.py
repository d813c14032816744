"""Datasets in the DeepFashion layouts (In-shop, Consumer-to-shop), a P x K item sampler, image caching."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .imageio import load_image

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


def training_halves(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """(queries, shop): each training item's photos dealt alternately to the shop and to the queries, in the
    partition's order. A query/gallery protocol on the training side, where a search setting may be chosen
    without looking at the test split; its products are ones a model has trained on."""
    dealt: dict[str, int] = {}
    queries, shop = [], []
    for r in records:
        dealt[r.item_id] = dealt.get(r.item_id, -1) + 1
        (queries if dealt[r.item_id] % 2 else shop).append(r)
    return queries, shop


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


class ImageDataset(Dataset):
    """Records -> (tensor, label index). Images are decoded reduced to `max_side` and, with cache=True, kept
    in memory, so that epochs after the first cost only augmentation (the data sets we train on are small)."""

    def __init__(self, root: Path, records: Sequence[Record], transform: Callable[[Image.Image], torch.Tensor],
                 max_side: int | None = None, cache: bool = False):
        self.root, self.records, self.transform = Path(root), list(records), transform
        self.max_side, self.cache = max_side, cache
        items = sorted({r.item_id for r in self.records})
        self.label_of = {item: i for i, item in enumerate(items)}
        self.labels = [self.label_of[r.item_id] for r in self.records]
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> Image.Image:
        if i in self._cache:
            return self._cache[i]
        img = load_image(self.root / self.records[i].path, max_side=self.max_side)
        if self.cache:
            self._cache[i] = img
        return img

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.image(i)), self.labels[i]


class PKSampler(Sampler[list[int]]):
    """Batches of P items x K images each, so every batch holds positives for the metric losses.
    Items with fewer than K images are sampled with repetition; an epoch visits each image about once."""

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0):
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.by_label: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            self.by_label.setdefault(label, []).append(i)
        if len(self.by_label) < p:
            raise ValueError(f"P={p} items per batch but the data has only {len(self.by_label)} items")
        self.num_batches = max(1, len(labels) // (p * k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        labels = list(self.by_label)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for label in rng.sample(labels, self.p):
                idx = self.by_label[label]
                batch += rng.sample(idx, self.k) if len(idx) >= self.k else rng.choices(idx, k=self.k)
            yield batch
