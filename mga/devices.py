"""Pick the device and the autocast policy once, for training and encoding alike."""
from __future__ import annotations

import contextlib

import torch

from .config import FORWARD_BATCH


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
