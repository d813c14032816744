"""What training and evaluation feed the model: data-set images decoded (and cached), P x K item batches, and a
split of the training products into query and shop halves."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from mga.data import Record
from mga.imageio import load_image


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
