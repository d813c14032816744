"""Pick the device and the autocast policy once, for training and encoding alike."""
from __future__ import annotations

import contextlib
import os

import torch

from .config import FEEDER_THREADS, FORWARD_BATCH, LOADER_WORKERS, OVERLAP_DECODING


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA; full precision on the CPU, where bf16 is slower on most chips."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_batch(device: torch.device) -> int:
    """Most images per encoding forward on this device (config.FORWARD_BATCH)."""
    return FORWARD_BATCH.get(device.type, FORWARD_BATCH["cpu"])


def loader_workers(device: torch.device) -> int:
    """DataLoader processes that decode images for work on this device (config.LOADER_WORKERS)."""
    cores = os.cpu_count() or 1
    n = LOADER_WORKERS.get(device.type, LOADER_WORKERS["cpu"])
    return max(1, cores - 1) if n is None else min(n, cores)


def overlap_decoding(device: torch.device) -> bool:
    """Whether decoding runs beside encoding on this device, or in turns with it (config.OVERLAP_DECODING)."""
    return OVERLAP_DECODING.get(device.type, OVERLAP_DECODING["cpu"])


@contextlib.contextmanager
def feeder_threads(device: torch.device):
    """torch's CPU threads set for the process that feeds a model on `device` while decoding workers run
    beside it (config.FEEDER_THREADS), restored afterwards."""
    n, before = FEEDER_THREADS.get(device.type), torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
