"""Encoding a stream of decoded gallery images in forwards of exactly `batch_size` views.

An image brings 1 to 17 views (its full photo and zoom windows, mga.views), so forwards cut per loaded batch
would have a different size almost every time. Carrying the views that do not fill a forward over to the next
batch gives a whole build one forward shape (the last forward excepted). A GPU pays for every new shape (compiling
kernels for it); on the CPU packing is neutral (docs/benchmarks.md).
"""
from __future__ import annotations

from collections import deque
from typing import Iterable

import torch

from mga.model import Encoding, MGAModel


class PackedEncoder:
    """Decoded records in (`index_builder.decode.EncodeDataset` items: views in "x", one box per view in "boxes",
    "x" None for a file that failed), records out, in the same order, each with its views' encodings in "enc"
    (global, parts, attn float16, as numpy: the index rebuilds the coarse embedding from the tokens) once all of
    its views are encoded."""

    def __init__(self, model: MGAModel, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self._waiting: deque[dict] = deque()  # records not handed back yet, in order
        self._views: list[torch.Tensor] = []  # their views not encoded yet, in order
        self._unencoded = 0  # how many views that is
        self._encoded: Encoding | None = None  # views encoded but not handed to their records yet

    def add(self, records: Iterable[dict]) -> list[dict]:
        """Take some decoded records; return those whose views are now all encoded (full forwards only)."""
        for record in records:
            views = record.pop("x")
            if views is not None:
                self._views.append(views)
                self._unencoded += len(views)
            self._waiting.append(record)
        full = self._unencoded - self._unencoded % self.batch_size
        if full:
            self._encode(full)
        return self._release()

    def flush(self) -> list[dict]:
        """Encode the views left over (one shorter forward) and return every record still waiting."""
        if self._unencoded:
            self._encode(self._unencoded)
        return self._release()

    def _encode(self, n: int) -> None:
        views = torch.cat(self._views) if len(self._views) > 1 else self._views[0]
        enc = self.model.encode(views[:n], self.batch_size)
        self._views = [views[n:]] if n < len(views) else []
        self._unencoded -= n
        self._encoded = enc if self._encoded is None else Encoding.cat([self._encoded, enc])

    def _release(self) -> list[dict]:
        done = []
        while self._waiting:
            n = len(self._waiting[0]["boxes"])  # views of the first waiting record (none for a failed file)
            if n:
                if self._encoded is None or len(self._encoded) < n:
                    break
                e, self._encoded = self._encoded[:n], self._encoded[n:]
                self._waiting[0]["enc"] = (e.global_.half().numpy(), e.parts.half().numpy(), e.attn.half().numpy())
            done.append(self._waiting.popleft())
        return done
