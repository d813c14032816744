"""Zoom views: each gallery photo is also indexed as a few close-up windows over the garment.

Shoppers (and shops' own "additional" photos) show a detail: a collar, a zip, a waistband. Against a full-length
photo, that detail is a few tokens wide; against a window over the same region it is seen at its own scale.
A gallery image scores as its best view (the full photo or one window), so a close-up query finds the garment
whose window matches, and the app can show *where* on the match it matched.

Windows are square, `scale` x the geometric mean side of the garment's bounding box (the non-white pixels of a
studio photo; the whole frame for other photos), centred on a `grid` x `grid` lattice over that box; windows
that are mostly background (less than `min_cover` garment pixels) are left out: they changed no ranking.
Boxes are fractions of the image, (x0, y0, x1, y1), so they mean the same at any resolution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .config import ZOOM_GRID, ZOOM_MIN_COVER, ZOOM_SCALE
from .transforms import garment_mask

Box = tuple[float, float, float, float]
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class ZoomViews:
    """How gallery images are windowed; grid=0 turns zoom views off (one view per image)."""

    grid: int = ZOOM_GRID
    scale: float = ZOOM_SCALE
    min_cover: float = ZOOM_MIN_COVER

    @property
    def max_per_image(self) -> int:
        """Most views an image gets: the full photo and grid x grid windows."""
        return 1 + max(self.grid, 0) ** 2

    def images_per_batch(self, views: int) -> int:
        """Images per loaded batch so that a batch fills forwards of `views` views (at least one image)."""
        return max(1, -(-views // self.max_per_image))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ZoomViews":
        return cls(**d) if d else cls(grid=0)  # an index written before zoom views had none

    def boxes(self, img: Image.Image) -> list[Box]:
        """The full view first, then the windows (fractions of the image)."""
        if self.grid <= 0:
            return [FULL_BOX]
        mask = garment_mask(img)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            x0, y0, x1, y1 = 0, 0, img.width, img.height
        else:
            x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        bw, bh = x1 - x0, y1 - y0
        side = min(max(1.0, self.scale * (bw * bh) ** 0.5), img.width, img.height)  # at least a pixel
        out: list[Box] = [FULL_BOX]
        for i in range(self.grid):
            for j in range(self.grid):
                cx, cy = x0 + (j + 0.5) * bw / self.grid, y0 + (i + 0.5) * bh / self.grid
                left = min(max(cx - side / 2, 0.0), img.width - side)
                top = min(max(cy - side / 2, 0.0), img.height - side)
                if mask[round(top):round(top + side), round(left):round(left + side)].mean() < self.min_cover:
                    continue
                out.append((left / img.width, top / img.height, (left + side) / img.width, (top + side) / img.height))
        return out

    def tensors(self, img: Image.Image, transform: Callable[[Image.Image], torch.Tensor]
                ) -> tuple[list[Box], torch.Tensor]:
        """(boxes, (V, 3, S, S)): `transform` applied to the full image and each window."""
        boxes = self.boxes(img)
        return boxes, torch.stack([transform(crop(img, b)) for b in boxes])


class ViewsTransform:
    """Image -> (V, 3, S, S): `transform` applied to each view (picklable, for DataLoader workers)."""

    def __init__(self, zoom: ZoomViews, transform: Callable[[Image.Image], torch.Tensor]):
        self.zoom, self.transform = zoom, transform

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.zoom.tensors(img, self.transform)[1]


def collate_views(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader collate for ViewsTransform items: all views stacked, and the number of views per image."""
    views = [v for v, _ in batch]
    return torch.cat(views), torch.tensor([len(v) for v in views])


def box_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """`box` (fractions) in pixels of a width x height frame: (x0, y0, x1, y1), at least one pixel each way."""
    x0, y0 = round(box[0] * width), round(box[1] * height)
    return x0, y0, max(x0 + 1, round(box[2] * width)), max(y0 + 1, round(box[3] * height))


def crop(img: Image.Image, box: Box) -> Image.Image:
    """The pixels of `box` (fractions) in `img`; the image itself for the full box."""
    return img if box == FULL_BOX else img.crop(box_pixels(box, *img.size))
