"""Memory that image decodes take, and the budget (DECODE_MEMORY) that large ones take turns in: without it a few
small, highly compressed files decoded at once would hold gigabytes between them."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

from .config import DECODE_MEMORY
from .heap import return_freed

# Decodes estimated under this never wait for DECODE_MEMORY: a 24 MP photo decoded whole (4 bytes a pixel) is below.
FREE_DECODE_BYTES = 100_000_000


def _bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel of `mode` takes in a decoded PIL image (RGB and LA are stored as 4)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def decode_bytes(img: Image.Image, factor: int, webp: bool) -> int:
    """Memory that decoding the opened `img` and reducing it by `factor` to RGB will take at most, from its
    size and mode: its decoded pixels (at the JPEG's DCT scale) and their RGB reduction (a full-size copy when
    `factor` is 1, but for an RGB image, which is its own)."""
    pixels = img.width * img.height
    if webp:  # libwebp decodes a lossless WebP whole (ARGB) first; its output is copied into a PIL image
        return pixels * 4 + pixels * 8 // factor ** 2
    if img.format == "WEBP":  # Pillow's animation decoder: two RGBA canvases, the frame's bytes and the image
        return pixels * 16
    cost = pixels * _bytes_per_pixel(img.mode)
    if img.mode[:1] in "IF":
        cost += pixels  # the 8-bit copy mga.imageio makes of it
    return cost + (pixels * 4 // factor ** 2 if factor > 1 or img.mode != "RGB" else 0)


class DecodeBudget:
    """Bytes that large decodes hold while they run (DECODE_MEMORY in all): a decode that would exceed it waits for
    others to finish. Small ones (under FREE_DECODE_BYTES) pass freely; one larger than the budget runs alone."""

    def __init__(self, capacity: int):
        self.capacity, self.free = capacity, capacity
        self.changed = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if nbytes < FREE_DECODE_BYTES:
            yield
            return
        nbytes = min(nbytes, self.capacity)
        with self.changed:
            self.changed.wait_for(lambda: self.free >= nbytes)
            self.free -= nbytes
        try:
            yield
        finally:
            return_freed()  # the arenas would keep a decode's worth per thread, which the budget does not count
            with self.changed:
                self.free += nbytes
                self.changed.notify_all()


DECODE_BUDGET = DecodeBudget(DECODE_MEMORY)
