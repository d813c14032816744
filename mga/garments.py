"""Which garments a photo shows, and where: a shop photo (and many a shopper's) shows a top and a bottom, and the
search reads the one its parts attend to. The garment found takes its kind from the #1 product and its rows from
the query's part attention; the other one (a top's bottoms, a bottom's top) is offered when the rows beyond it
show enough of something that is neither background nor skin (mga.colour's garment weights). Both come as
regions of the photo, to draw and to search on their own (`Garment.crop`, with `Garment.categories`). The
engine names them only when the #1 is likely the shop's product: otherwise its kind says nothing of the photo.

No detector: the model's own maps and the colours of the photo, a few ms per photo (bench.garments measures
what it offers on the test queries)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .colour import bilinear_mass, bilinear_matrix, skin_mask, upsample
from .part_names import garment_kind
from .transforms import letterbox_box

KIND_NAMES = {"top": "Top", "bottom": "Bottoms"}  # what the shopper picks between
OTHER_KIND = {"top": "bottom", "bottom": "top"}
MASS = (0.05, 0.95)  # the found garment spans the rows that hold this share of the parts' attention
OVERLAP = 0.04  # the other garment's region starts this far (of the photo's height) inside the found one's
MIN_HEIGHT = 0.12  # the other garment's region: at least this share of the photo's height,
MIN_FIGURE = 0.08  # this share of its pixels not background,
MIN_CLOTHED = 0.5  # and this share of those not skin (bare legs below a top are no garment)
MARGIN = 0.03  # around a region's columns, of the photo's width
FIGURE = 0.05  # a pixel whose garment weight (mga.colour.garment_weights) is above this is not background
CLOTHED = 0.5  # and above this, not skin either (skin weighs SKIN_WEIGHT)
ON_SKIN = 0.5  # a part with this share of its attention on skin is no garment detail (ui.details.what_decided)


@dataclass(frozen=True)
class Garment:
    """One garment of the photo: its kind (mga.part_names.garment_kind: "top" or "bottom"), its region (fractions of
    the photo: x0, y0, x1, y1) and whether it is the one the whole photo's search found."""

    kind: str
    box: tuple[float, float, float, float]
    found: bool

    @property
    def name(self) -> str:
        return KIND_NAMES[self.kind]

    def categories(self, shop: Sequence[str]) -> list[str]:
        """The shop's categories of this kind: what searching this garment alone may return."""
        return [c for c in shop if garment_kind(c) == self.kind]

    def crop(self, image: Image.Image) -> Image.Image:
        x0, y0, x1, y1 = self.box
        w, h = image.size
        return image.crop((round(x0 * w), round(y0 * h), max(round(x1 * w), round(x0 * w) + 1),
                           max(round(y1 * h), round(y0 * h) + 1)))


def find_garments(size: tuple[int, int], weights: np.ndarray, attn: np.ndarray, found_category: str
                  ) -> list[Garment]:
    """The garments of a photo of `size` (w, h): the one found (`found_category`: the #1 product's, `attn`: the
    query's part attention (K, h, w) on its letterbox), then the other kind's when the photo shows it; [] when the
    #1 is no garment of either kind (shoes, a hat). `weights`: its letterbox's garment weights (mga.colour
    .photo_pixels: studio white 0, skin low)."""
    kind = garment_kind(found_category)
    if kind not in OTHER_KIND:
        return []
    side = len(weights)
    left, top, w, h = letterbox_box(size[0], size[1], side)
    weight = weights[top:top + h, left:left + w]
    parts = upsample(attn, side)[top:top + h, left:left + w].sum(1)
    if parts.sum() <= 0:
        return []
    mass = np.cumsum(parts) / parts.sum()
    y0, y1 = float(np.searchsorted(mass, MASS[0]) / h), float((np.searchsorted(mass, MASS[1]) + 1) / h)
    if kind == "bottom":  # the parts attend to a bottom's upper half: its legs go on down while rows are clothed
        y1 = _clothed_down_to(weight, y1)
    x0, x1 = _columns(weight, y0, y1)
    found = Garment(kind, (x0, y0, x1, y1), True)
    oy0, oy1 = (max(0.0, y1 - OVERLAP), 1.0) if kind == "top" else (0.0, min(1.0, y0 + OVERLAP))
    band = weight[int(oy0 * h):int(np.ceil(oy1 * h))]
    figure = band > FIGURE
    if oy1 - oy0 < MIN_HEIGHT or figure.mean() < MIN_FIGURE or (band[figure] > CLOTHED).mean() < MIN_CLOTHED:
        return [found]
    x0, x1 = _columns(weight, oy0, oy1)
    return [found, Garment(OTHER_KIND[kind], (x0, float(oy0), x1, float(oy1)), False)]


def _clothed_down_to(weight: np.ndarray, y: float) -> float:
    """The row (fraction) down to which, from `y`, every row's figure is mostly clothed (not skin)."""
    h = len(weight)
    row = int(y * h)
    while row < h:
        figure = weight[row] > FIGURE
        if figure.any() and (weight[row][figure] > CLOTHED).mean() < MIN_CLOTHED:
            break
        row += 1
    return row / h


def _columns(weight: np.ndarray, y0: float, y1: float) -> tuple[float, float]:
    """The columns (fractions, with a margin) of what is not background between rows y0 and y1."""
    h, w = weight.shape
    cols = np.flatnonzero((weight[int(y0 * h):max(int(np.ceil(y1 * h)), int(y0 * h) + 1)] > FIGURE).any(0))
    if len(cols) == 0:
        return 0.0, 1.0
    return max(0.0, float(cols[0] / w - MARGIN)), min(1.0, float((cols[-1] + 1) / w + MARGIN))


def parts_on_skin(attn: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Each part's share of its attention (K, h, w) that lies on skin (mga.colour.skin_mask) in the photo's
    letterbox (`lab`, mga.colour.photo_pixels): a part there is no garment detail, whatever its name says."""
    maps = np.clip(np.asarray(attn, dtype=np.float64), 0, None)
    resize = bilinear_matrix(maps.shape[-2:], len(lab))  # each map's mass on skin, summed over its cells
    cells = maps.reshape(len(maps), -1)
    on_skin, mass = cells @ (skin_mask(lab).ravel() @ resize), cells @ bilinear_mass(maps.shape[-2:], len(lab))
    return on_skin / np.maximum(mass, 1e-12)
