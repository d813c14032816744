"""Why a match matched: per-part contributions of ATA turned into heatmaps on the query and on the match.

For one (query, match) pair with ATA contributions c_k and soft assignment pi (K x K):
    query heatmap = sum_k c_k A^q_k
    match heatmap = sum_k c_k sum_j pi_kj A^x_j
where A are FGA's part attention maps on the token grid. Maps are upsampled to the letterboxed input size,
the letterbox padding is cropped off, and the rest is resized to the image's own frame and scaled to [0, 1].
All functions here are pure (numpy / torch in, numpy / PIL out).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .transforms import letterbox_box
from .views import FULL_BOX, box_pixels


def part_contribution_maps(
    contributions: np.ndarray | torch.Tensor,
    query_attn: np.ndarray | torch.Tensor,
    match_attn: np.ndarray | torch.Tensor,
    assignment: np.ndarray | torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid-level heatmaps of one pair: contributions (K,), attn maps (K, h, w), assignment pi (K, K).

    Returns (query_map, match_map), float32 (h, w) each, not yet normalised (may hold negative values where
    a part contributes negatively)."""
    c = np.asarray(contributions, dtype=np.float32)
    aq = np.asarray(query_attn, dtype=np.float32)
    ax = np.asarray(match_attn, dtype=np.float32)
    pi = np.asarray(assignment, dtype=np.float32)
    query_map = np.tensordot(c, aq, axes=1)  # sum_k c_k A^q_k
    moved = np.tensordot(pi, ax, axes=1)  # (K, h, w): sum_j pi_kj A^x_j
    match_map = np.tensordot(c, moved, axes=1)
    return query_map.astype(np.float32), match_map.astype(np.float32)


def normalize01(m: np.ndarray) -> np.ndarray:
    """Min-max scale each map (the last two axes) to [0, 1]; a constant or non-finite map becomes all zeros."""
    m = np.array(m, dtype=np.float32)  # a copy, scaled in place
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    ok = np.isfinite(span) & (span >= 1e-12)
    with np.errstate(invalid="ignore"):  # non-finite maps are zeroed below
        m -= lo
        m /= np.where(ok, span, 1)  # divided, not multiplied by the inverse: the maximum is exactly 1
    if not ok.all():
        m[np.broadcast_to(~ok, m.shape)] = 0
    return np.clip(m, 0, 1, out=m)


def heatmap_size(image_w: int, image_h: int, max_side: int | None) -> tuple[int, int]:
    """The image's own size, or scaled down (aspect kept) so the longest side is at most max_side."""
    if max_side is None or max(image_w, image_h) <= max_side:
        return image_w, image_h
    s = max_side / max(image_w, image_h)
    return max(1, round(image_w * s)), max(1, round(image_h * s))


def to_image_frame(grid_map: np.ndarray | torch.Tensor, image_w: int, image_h: int, image_size: int,
                   max_side: int | None = None, box: Sequence[float] = FULL_BOX) -> np.ndarray:
    """Token-grid map (h, w) of one view -> float32 (H, W) map in [0, 1] in the image's own pixel frame; a stack
    (n, h, w) of maps of the same view gives (n, H, W) in one pass (the query's maps for k matches).

    Upsampled (bilinear) to the letterboxed model input (image_size x image_size), letterbox padding cropped
    off with `letterbox_box`, resized to the view's place in the image (`box`, fractions: the whole image, or a
    zoom window with its coldest value around it) at the image size (or at most max_side on the longest side)."""
    out_w, out_h = heatmap_size(image_w, image_h, max_side)
    x0, y0, x1, y1 = box_pixels(box, out_w, out_h)
    g = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))
    stacked = g.ndim == 3
    full = F.interpolate(g.reshape(-1, 1, *g.shape[-2:]), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)
    view_w, view_h = max(1, round((box[2] - box[0]) * image_w)), max(1, round((box[3] - box[1]) * image_h))
    left, top, w, h = letterbox_box(view_w, view_h, image_size)
    crop = full[:, :, top:top + h, left:left + w]
    view = F.interpolate(crop, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[:, 0].numpy()
    if (x0, y0, x1, y1) == (0, 0, out_w, out_h):
        frames = view
    else:
        frames = np.empty((len(view), out_h, out_w), dtype=np.float32)
        frames[:] = view.min(axis=(1, 2))[:, None, None]  # outside the window: the coldest value
        frames[:, y0:y1, x0:x1] = view
    frames = normalize01(frames)
    return frames if stacked else frames[0]


@functools.lru_cache(maxsize=None)
def _colormap_lut(cmap: str) -> np.ndarray:
    """A matplotlib colormap's (256) entries as uint8 RGB: a palette is far faster than calling the colormap
    on every pixel."""
    from matplotlib import colormaps

    cm = colormaps[cmap].resampled(256)  # a palette holds 256 colours
    return np.round(cm(np.arange(256))[:, :3] * 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.6, cmap: str = "inferno") -> Image.Image:
    """Blend a [0, 1] heatmap (any size; resized to the image) over an RGB image. The blend weight grows with
    the heat, so cold regions show the photo as it is and only the parts that drove the match are coloured."""
    image = image.convert("RGB")
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.shape != (image.height, image.width):
        hm = np.asarray(Image.fromarray(hm, mode="F").resize(image.size, Image.BILINEAR), dtype=np.float32)
    hm = np.clip(hm, 0, 1)
    lut = _colormap_lut(cmap)  # applied as a palette: PIL maps the indices in C
    colored = Image.fromarray(np.minimum(hm * len(lut), len(lut) - 1).astype(np.uint8), "P")
    colored.putpalette(lut.tobytes())
    colored = colored.convert("RGB")
    weight = Image.fromarray(np.round(hm * (alpha * 255)).astype(np.uint8), "L")  # per pixel: alpha * heat
    return Image.composite(colored, image, weight)
