"""Image -> tensor: letterboxing for evaluation and search (training augmentation: training.augment)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .imageio import bicubic_pixels, fit_size, load_image, shrink

WHITE = (255, 255, 255)


def letterbox_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where the original image lies inside its letterbox: (left, top, w, h) in letterbox pixels."""
    w, h = fit_size(width, height, size)
    return (size - w) // 2, (size - h) // 2, w, h


def letterbox_pixels(img: Image.Image, size: int, fill: tuple[int, int, int] = WHITE) -> torch.Tensor:
    """RGB `img` fitted whole into size x size without distortion, padded with `fill` (studio white): uint8
    pixels (3, size, size), what crosses process and device boundaries (4x smaller than floats)."""
    left, top, w, h = letterbox_box(img.width, img.height, size)
    canvas = torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1).repeat(1, size, size)
    canvas[:, top:top + h, left:left + w] = bicubic_pixels(img, (w, h))
    return canvas


def letterbox(img: Image.Image, size: int, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """`letterbox_pixels` as a PIL image (for the augmentations that follow it in training)."""
    return Image.fromarray(letterbox_pixels(img, size, fill).permute(1, 2, 0).numpy())


def pixels(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


class Normalize:
    """uint8 pixels (3, H, W) or (B, 3, H, W), on any device, or a PIL RGB image -> float tensor normalised with
    the backbone's mean and std (torchvision's ToImage, ToDtype(scale=True), Normalize, bit for bit)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: Image.Image | torch.Tensor) -> torch.Tensor:
        x = pixels(x) if isinstance(x, Image.Image) else x
        return x.float().mul_(1 / 255).sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def working_side(size: int) -> int:
    """Images are first reduced to twice the model's input side (JPEGs while decoding, see load_image):
    sharp enough for close-up crops in training, cheap to decode, and the same two resizing steps in
    training, evaluation, indexing and the app (the scores move by a few points of R@1 when they differ)."""
    return 2 * size


class EvalTransform:
    """Deterministic: reduce to the working side, letterbox on white, normalise. `pixels` stops before
    normalising, so that the index builder ships uint8 to the model's device (MGAModel.encode normalises)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size, self.normalize = size, Normalize(mean, std)

    def pixels(self, img: Image.Image) -> torch.Tensor:
        return letterbox_pixels(shrink(img, working_side(self.size)), self.size)

    def load(self, path: str | Path) -> Image.Image:
        """An image file decoded already reduced to the working side (what `pixels` reduces it to anyway)."""
        return load_image(path, max_side=working_side(self.size))

    def load_pixels(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """(N, 3, size, size) uint8 pixels of image files, each decoded already reduced to the working side."""
        return torch.stack([self.pixels(self.load(p)) for p in paths])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(img))


def garment_mask(img: Image.Image, white: int = 242) -> np.ndarray:
    """Boolean mask of the non-white pixels: the garment (and its wearer) on a studio background."""
    return np.asarray(ImageOps.grayscale(img)) <= white


