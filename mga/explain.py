"""Why a match matched: the pair's score spread over the cells of each photo, term by term, as heatmaps.

A pair's score is s = W <g_q, g_x> + sum_k c_k: the global token's term (the trained token and, with an anchor,
the pretrained backbone's descriptor: "the pretrained look") and ATA's part contributions c_k. Each photo's global
token splits exactly over its token cells (mga.cells.global_cells: GeM is homogeneous of degree 1), so
    W <g_q, g_x> = sum_n W <u^q_n, g_x> = sum_n W <u^x_n, g_q>,
and each part's term splits by where it looks:
    query:  c_k = sum_n c_k A^q_k(n)        match:  c_k = sum_n c_k sum_j pi_kj A^x_j(n)
where A are FGA's part attention maps (each sums to 1) and pi ATA's soft assignment. So on either photo the
cells of all terms together sum to the score: the whole-score map shows what drove the match, each term's map
its share. Maps are upsampled to the letterboxed input size, the letterbox padding is cropped off, and the rest
is resized to the image's own frame and scaled to [0, 1]. All functions here are pure (numpy / torch in, numpy /
PIL out).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .transforms import letterbox_box
from .views import FULL_BOX, box_pixels

WHOLE = "whole"  # every term of the score together
OVERALL = "overall"  # the global token's terms (the pretrained look and the trained token): a shopper's "overall look"


@dataclass
class ScoreMaps:
    """One photo's share of a pair's score on its token grid, term by term; all cells of all terms sum to it."""

    look: np.ndarray  # (h, w) the pretrained backbone's descriptor (zeros for a model without an anchor)
    global_: np.ndarray  # (h, w) the trained global token
    parts: np.ndarray  # (K, h, w) each part's contribution c_k, where the part looks

    def term(self, name: str | int = WHOLE) -> np.ndarray:
        """One term's map: WHOLE, OVERALL or a part's number."""
        if name == WHOLE:
            return self.look + self.global_ + self.parts.sum(0)
        if name == OVERALL:
            return self.look + self.global_
        return self.parts[int(name)]

    def totals(self) -> dict[str, float]:
        """Each term's sum over the cells (for a check against the score's own terms)."""
        return {"look": float(self.look.sum()), "global": float(self.global_.sum()),
                "parts": [float(p.sum()) for p in self.parts]}


def score_maps(cells: np.ndarray | torch.Tensor, other_global: np.ndarray | torch.Tensor, trained_width: int,
               weight: float, contributions: np.ndarray | Sequence[float], attn: np.ndarray | torch.Tensor
               ) -> ScoreMaps:
    """One photo's ScoreMaps in a pair: its cells' shares of its global token (N, D) (mga.cells.global_cells; the
    grid's cells in order), the other photo's global token (D,), the width of the trained token (the rest is the
    pretrained look), the global term's weight W, the parts' contributions c (K,) and where each part's term lies
    on this photo's grid (K, h, w): its own attention maps for the query, sum_j pi_kj A_j for the match. Each map of
    `attn` is rescaled to sum to 1, so that the parts' cells sum to their contributions."""
    u = np.asarray(cells, dtype=np.float64)
    g = weight * np.asarray(other_global, dtype=np.float64)
    a = np.asarray(attn, dtype=np.float64)
    h, w = a.shape[-2:]
    a = a / np.where(a.sum((-2, -1), keepdims=True) > 0, a.sum((-2, -1), keepdims=True), 1)
    c = np.asarray(contributions, dtype=np.float64)
    # each cell's dot product with the other token, over the pretrained look's dimensions and the trained token's
    return ScoreMaps((u[:, trained_width:] @ g[trained_width:]).reshape(h, w).astype(np.float32),
                     (u[:, :trained_width] @ g[:trained_width]).reshape(h, w).astype(np.float32),
                     (c[:, None, None] * a).astype(np.float32))


def pinned(cells: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """`cells` (N, D) moved to sum to `target` (D,) instead of their own sum, the difference spread by each cell's
    share of their mass: a photo encoded again (for its cells) against the token the index stores (in float16)."""
    u = np.asarray(cells, dtype=np.float64)
    mass = np.abs(u).sum(1)
    share = mass / mass.sum() if mass.sum() > 0 else np.full(len(u), 1.0 / len(u))
    return u + share[:, None] * (np.asarray(target, dtype=np.float64) - u.sum(0))[None]


def moved_attention(assignment: np.ndarray | torch.Tensor, match_attn: np.ndarray | torch.Tensor) -> np.ndarray:
    """Where each query part's term lies on the match: sum_j pi_kj A^x_j (K, h, w)."""
    return np.tensordot(np.asarray(assignment, dtype=np.float32), np.asarray(match_attn, dtype=np.float32), axes=1)


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
