"""Who encodes a build's chunks: this process (`LocalRunner`, the default), or the workers of a Ray cluster
(`index_builder.distributed.RayRunner`). Both hand finished chunks to the same `save`, so the build folder, its
`--resume`, the skip report and the index written afterwards do not depend on the runner.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from tqdm import tqdm

from mga.devices import feeder_threads, forward_batch, loader_workers, overlap_decoding
from mga.model import MGAModel

from .chunks import Chunk, chunk_arrays
from .decode import EncodeDataset, decoded_batches
from .packing import PackedEncoder


@dataclass
class ChunkJob:
    """What a runner encodes: chunks `todo` of `chunks` (entry ranges of `dataset`), each handed whole to
    `save(c, arrays)` as soon as it is encoded."""

    model: MGAModel
    dataset: EncodeDataset
    chunks: list[Chunk]
    todo: list[int]
    save: Callable[[int, dict[str, np.ndarray]], None]

    def images_done(self) -> int:
        todo = set(self.todo)
        return sum(e - s for c, (s, e) in enumerate(self.chunks) if c not in todo)


@dataclass
class EncodeRun:
    """How the encode loop ran: what the manifest's `build` section reports."""

    seconds: float = 0.0
    waited: float = 0.0  # seconds the loop waited for decoded images
    images: int = 0  # images encoded by this run (not by the run it resumed)
    threads: int = field(default_factory=torch.get_num_threads)  # torch's, while feeding the model
    settings: dict = field(default_factory=dict)  # the runner's, as resolved for the device

    def report(self) -> dict:
        return {"seconds": None, "encode_seconds": round(self.seconds, 2), "decode_wait_seconds": round(self.waited, 2),
                "images_encoded_now": self.images, "torch_threads": self.threads,
                "images_per_s": round(self.images / self.seconds, 2) if self.images and self.seconds > 0 else None,
                **self.settings}


class ChunkFiler:
    """Encoded records in, in any order; each chunk handed to `job.save` as soon as all of its records are in
    (what --resume starts from)."""

    def __init__(self, job: ChunkJob):
        self.job, self.size = job, job.chunks[0][1] - job.chunks[0][0]
        self.pending: dict[int, list[dict]] = {c: [] for c in job.todo}

    def add(self, records: list[dict]) -> None:
        for r in records:
            c = r["i"] // self.size
            self.pending[c].append(r)
            if len(self.pending[c]) == self.job.chunks[c][1] - self.job.chunks[c][0]:
                self.job.save(c, chunk_arrays(self.pending.pop(c)))


class ChunkRunner(Protocol):
    def run(self, job: ChunkJob, progress: bool) -> EncodeRun: ...


def image_batches(chunks: list[Chunk], todo: list[int], per_batch: int) -> list[list[int]]:
    """Entry indices of chunks `todo`, in loader batches of `per_batch` images that never straddle chunks."""
    return [list(range(s, min(e, s + per_batch))) for c in todo for (s0, e) in [chunks[c]]
            for s in range(s0, e, per_batch)]


def encoded_records(model: MGAModel, dataset: EncodeDataset, batches: list[list[int]], batch_size: int,
                    workers: int, overlap: bool, run: EncodeRun) -> Iterator[list[dict]]:
    """Records of `batches` (decoded, then encoded in packed forwards of `batch_size` views), in order, as soon
    as all of their views are encoded; `run` gathers the timings."""
    with torch.inference_mode(), feeder_threads(model.device):
        run.threads = torch.get_num_threads()
        packer = PackedEncoder(model, batch_size)
        t_wait = time.perf_counter()
        for batch in decoded_batches(dataset, batches, workers, overlap):
            run.waited += time.perf_counter() - t_wait
            run.images += len(batch)
            yield packer.add(batch)
            t_wait = time.perf_counter()
        yield packer.flush()


@dataclass
class LocalRunner:
    """This process encodes, fed by `workers` decoding processes (None: the device's defaults, mga.devices)."""

    batch_size: int | None = None  # views per forward
    workers: int | None = None
    overlap: bool | None = None  # decode beside encoding, or in turns with it (decode.decoded_batches)

    def run(self, job: ChunkJob, progress: bool) -> EncodeRun:
        device = job.model.device
        batch_size = self.batch_size or forward_batch(device)
        workers = loader_workers(device) if self.workers is None else self.workers
        overlap = overlap_decoding(device) if self.overlap is None else self.overlap
        run, t0 = EncodeRun(settings={"batch_size": batch_size, "workers": workers, "overlap_decoding": overlap}), \
            time.perf_counter()
        if not job.todo:
            return run
        batches = image_batches(job.chunks, job.todo, job.dataset.zoom.images_per_batch(batch_size))
        bar = tqdm(total=len(job.dataset), initial=job.images_done(), desc="index", unit="img",
                   disable=not progress or None, dynamic_ncols=True)
        filer = ChunkFiler(job)
        for records in encoded_records(job.model, job.dataset, batches, batch_size, workers, overlap, run):
            filer.add(records)
            bar.update(len(records))
        bar.close()
        run.seconds = time.perf_counter() - t0
        return run
