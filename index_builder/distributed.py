"""Index builds spread over a Ray cluster (or a local Ray on this machine): `RayRunner`, a chunk runner for
`build_index`, and `python -m index_builder --gallery SRC --out DIR --ray [ADDRESS]`.

Each Ray worker is an actor holding one copy of the model. The build's chunks (`index_builder.chunks`) are
split into tasks of a few dozen images, each handed to whichever actor is free; the encoded records come back to
this process, which saves each chunk in the build folder once it is whole, exactly as a local build does. So
`--resume`, the skip report, the manifest and the index written at the end are the local build's, and an index
built on Ray equals one built here. A worker that dies (a killed process, a lost node) is restarted by Ray and
its task retried. Ray is optional (`requirements-scale.txt`).

On a multi-node cluster every node must see the gallery and the build folder at the same paths (a shared or
network file system) and have this project's requirements installed; the `mga` and `index_builder` packages
themselves are shipped to the workers by Ray.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mga.devices import forward_batch
from mga.model import MGAModel

from .chunks import Chunk
from .decode import EncodeDataset
from .runners import ChunkFiler, ChunkJob, EncodeRun, encoded_records, image_batches
from .writer import BuildError

DEFAULT_RAY_WORKERS = 2
RESTARTS = 3  # per worker: a file that kills its worker every time ends the build instead of looping forever


class ChunkEncoder:
    """A Ray actor: one model, encoding ranges of the build's dataset (decoding in its own process)."""

    def __init__(self, model: MGAModel, dataset: EncodeDataset, batch_size: int | None, threads: int):
        import ray

        torch.set_num_threads(threads)  # its share of the node's cores, not every core
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.model, self.dataset = model.to(device).eval(), dataset
        self.batch_size = batch_size or forward_batch(self.model.device)

    def encode(self, entries: Chunk) -> tuple[list[dict], float]:
        """Entries [start, end) as encoded records (plain numpy inside), and the seconds spent decoding them."""
        run = EncodeRun()
        batches = image_batches([entries], [0], self.dataset.zoom.images_per_batch(self.batch_size))
        records = [r for rs in encoded_records(self.model, self.dataset, batches, self.batch_size, 0, True, run)
                   for r in rs]
        return records, run.waited


@dataclass
class RayRunner:
    """Encode a build's chunks on `workers` Ray actors of `cpus_per_worker` cores (and GPUs) each.

    `address`: a running cluster (`ray://host:10001`, `auto`, ...); None starts a local Ray on this machine for
    the build and stops it afterwards."""

    address: str | None = None
    workers: int = DEFAULT_RAY_WORKERS
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int | None = None  # views per forward (None: the worker's device's default)
    task_images: int = 64  # most images per task: chunks are split so that every worker gets work

    def __post_init__(self):
        if self.workers < 1 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"Ray workers need at least 1 worker and some CPU each (got {self.workers} workers, "
                             f"{self.cpus_per_worker} CPUs, {self.gpus_per_worker} GPUs per worker)")

    def run(self, job: ChunkJob, progress: bool) -> EncodeRun:
        import ray
        from ray.util import ActorPool

        threads = max(1, math.floor(self.cpus_per_worker))
        run = EncodeRun(threads=threads, settings={
            "runner": "ray", "ray_address": self.address or "local", "ray_workers": self.workers,
            "cpus_per_worker": self.cpus_per_worker, "gpus_per_worker": self.gpus_per_worker,
            "batch_size": self.batch_size})
        if not job.todo:
            return run
        started, actors = self._connect(), []
        t0 = time.perf_counter()
        try:
            model = job.model if job.model.device.type == "cpu" else copy.deepcopy(job.model).cpu()
            model_ref, dataset_ref = ray.put(model), ray.put(job.dataset)
            actor = ray.remote(ChunkEncoder).options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                                     max_restarts=RESTARTS, max_task_retries=RESTARTS)
            actors = [actor.remote(model_ref, dataset_ref, self.batch_size, threads) for _ in range(self.workers)]
            pool = ActorPool(actors)
            for entries in self._tasks(job):
                pool.submit(lambda a, entries: a.encode.remote(entries), entries)
            bar = tqdm(total=len(job.dataset), initial=job.images_done(), desc="index (ray)", unit="img",
                       disable=not progress or None, dynamic_ncols=True)
            filer = ChunkFiler(job)
            while pool.has_next():
                try:
                    records, waited = pool.get_next_unordered()
                except ray.exceptions.RayError as exc:
                    raise BuildError(f"a Ray worker failed {RESTARTS + 1} times on the same images (finished "
                                     f"chunks are kept: run again with --resume): {exc}") from exc
                filer.add(records)
                run.images += len(records)
                run.waited += waited
                bar.update(len(records))
            bar.close()
        finally:
            for a in actors:
                ray.kill(a)
            if started:
                ray.shutdown()
        run.seconds = time.perf_counter() - t0
        return run

    def _tasks(self, job: ChunkJob) -> list[Chunk]:
        """Entry ranges within the chunks to do, of at most `task_images` images and about four per worker: whole
        chunks (the --resume unit, 1024 images by default) would leave all but one worker idle on a small gallery."""
        images = sum(job.chunks[c][1] - job.chunks[c][0] for c in job.todo)
        size = max(1, min(self.task_images, math.ceil(images / (4 * self.workers))))
        return [(s, min(e, s + size)) for c in job.todo for (s0, e) in [job.chunks[c]] for s in range(s0, e, size)]

    def _connect(self) -> bool:
        """Join the cluster at `address`, or start a local one; False when this process is already connected."""
        import ray

        import index_builder
        import mga

        if ray.is_initialized():
            return False
        env = {"py_modules": [mga, index_builder]}  # the workers import the model and dataset classes from these
        if self.address:
            ray.init(address=self.address, runtime_env=env, logging_level="WARNING")
        else:
            cpus = max(os.cpu_count() or 1, math.ceil(self.workers * self.cpus_per_worker))
            ray.init(num_cpus=cpus, num_gpus=math.ceil(self.workers * self.gpus_per_worker) or None,
                     include_dashboard=False, runtime_env=env, logging_level="WARNING")
        return True
