"""Gallery files -> decoded views, for the encoder: a dataset that never fails on a bad file (its record carries
the ImageError message), and the two ways of feeding the model (decoding beside the forwards, or in turns)."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mga.config import BURST_IMAGES
from mga.files import atomic_path
from mga.imageio import ImageError, load_image
from mga.transforms import working_side
from mga.views import ZoomViews

THUMBS = "thumbs"


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
    workers then fill its idle moments instead of preempting its threads mid-operation (docs/benchmarks.md)."""
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
    Decoders running beside the model's forwards slow them down far more than their own CPU time
    (docs/benchmarks.md), so the turns are faster overall."""
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


