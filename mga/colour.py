"""The shopper's colour: which of a product's photos shows it in the colour of the garment in the query.

A product's photos in a shop are often one per colour (Luma's: three colours of most products). A result's card
should show the product in the colour the shopper photographed, not the colour of the photo that happened to match
best. Each photo's garment colour is a soft histogram in CIELAB (a perceptual space: equal distances look about
equally different) over the garment's pixels: studio white is left out, skin weighs little, and on the query the
model's part attention (which sits on the garment: at least 93 % of it on the figure) weighs each pixel. Gallery
photos are weighed without attention (an index need not store it, and a shop photo's background is white), so a
photo's colour is read from its thumbnail alone. Two colours are compared by the Hellinger distance of their
histograms (0: the same, 1: nothing in common); a product's photo nearest to the query is shown, and when even the
nearest is further than NOT_IN_COLOUR the product is said not to come in the query's colour.

The settings (the mask: attention on the query, white and skin left out; the histogram against a mean colour; the
grid; the skin weight; the threshold) were chosen on the training split of `luma-inshop` alone, each training
photo against the other photos of its product: the photo of the query's colour is the nearest for 0.944 of the 197
whose product has one; in a first comparison, a mean Lab colour over the same mask found 0.924 and a histogram
without the query's attention and skin mask 0.924; a finer or coarser grid or another skin weight (0 to 0.5)
moved it by at most two photos. `python -m bench.colour` measures them on the test
split's queries.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .transforms import letterbox_pixels

SIDE = 64  # photos are letterboxed to this side: a garment's colour needs no detail
L_BINS, AB_BINS, AB_RANGE = 6, 9, 64.0  # histogram grid: lightness 0..100, a and b in -64..64 (clipped)
SKIN_WEIGHT = 0.15  # what a skin-coloured pixel weighs against a garment pixel
# A product's nearest photo further than this from the query's garment (Hellinger distance): the product does not
# come in the query's colour. Chosen on the training split (module doc): there 0.10 of the photos whose product
# comes in their colour are said not to (0.13 at 0.6, 0.19 at 0.5) and 0.79 of the others are (0.88, 0.92): a
# shopper told wrongly that a product lacks their colour is the worse mistake
NOT_IN_COLOUR = 0.75
BINS = L_BINS * AB_BINS * AB_BINS
KEPT = 20_000  # gallery photos whose colour a search engine keeps (BINS float32 each, about 39 MB in all)

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def _linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in 0..1 -> linear light."""
    return np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)


_LINEAR_U8 = _linear(np.arange(256) / 255.0)  # every uint8 value's, looked up rather than raised to a power


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) uint8 or floats in 0..1 -> CIELAB (..., 3) under D65."""
    rgb = np.asarray(rgb)
    c = _LINEAR_U8[rgb] if rgb.dtype == np.uint8 else _linear(rgb.astype(np.float64))
    xyz = c @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def letterboxed(image: Image.Image, side: int = SIDE) -> np.ndarray:
    """The photo fitted whole into side x side on white, as the model sees it (its attention grid covers this
    square): (side, side, 3) uint8. A large photo is first box-reduced by a whole factor: resampling all its pixels
    would cost more than everything else a colour reads."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    factor = max(img.size) // (2 * side)
    return letterbox_pixels(img.reduce(factor) if factor > 1 else img, side).permute(1, 2, 0).numpy()


def skin_mask(lab: np.ndarray) -> np.ndarray:
    """The pixels of a Lab photo whose colour is skin's (mid lightness, warm hue, moderate chroma)."""
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma, hue = np.hypot(a, b), np.degrees(np.arctan2(b, a))
    return (light > 30) & (light < 90) & (hue > 25) & (hue < 75) & (chroma > 8) & (chroma < 40)


def garment_weights(lab: np.ndarray, attention: np.ndarray | None = None) -> np.ndarray:
    """What each pixel of a (side, side, 3) Lab photo weighs in its garment's colour: studio white nothing, skin
    SKIN_WEIGHT, and with `attention` ((h, w) or (K, h, w) maps over the same square) each pixel its share."""
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    w = 1 - np.clip((light - 90) / 5, 0, 1) * np.clip((8 - chroma) / 4, 0, 1)  # near-white and near-grey: out
    w = w * np.where(skin_mask(lab), SKIN_WEIGHT, 1.0)
    if attention is not None:
        w = w * upsample(attention, lab.shape[0])
    return w


def upsample(attention: np.ndarray, side: int) -> np.ndarray:
    """Attention maps (h, w) or (K, h, w), summed over K, bilinearly resized to side x side, never negative."""
    att = np.asarray(attention, dtype=np.float32)
    att = att.reshape(-1, *att.shape[-2:]).sum(0)
    att = att - min(0.0, float(att.min()))
    flat = bilinear_matrix(att.shape, side) @ att.ravel().astype(np.float64)
    return np.clip(flat.reshape(side, side), 0, None)


@functools.lru_cache(maxsize=8)
def bilinear_matrix(grid: tuple[int, int], side: int) -> np.ndarray:
    """PIL's bilinear resize of an (h, w) map to side x side as a (side * side, h * w) matrix (each column: one
    cell's unit map resized). Resizing is linear: one product replaces a resize per map, and a sum over the pixels
    of resized maps folds into the cells (mga.garments.parts_on_skin)."""
    h, w = grid
    units = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w)
    cols = [np.asarray(Image.fromarray(u, mode="F").resize((side, side), Image.BILINEAR), np.float64).ravel()
            for u in units]
    return np.stack(cols, 1)


@functools.lru_cache(maxsize=8)
def bilinear_mass(grid: tuple[int, int], side: int) -> np.ndarray:
    """Each cell's mass once resized (the column sums of `bilinear_matrix`), summed once, not per photo."""
    return bilinear_matrix(grid, side).sum(0)


def histogram(lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A soft (trilinear) histogram of Lab pixels over the L_BINS x AB_BINS x AB_BINS grid, normalised to sum 1
    (all zeros when every pixel weighs nothing)."""
    pts = lab.reshape(-1, 3)
    wts = weights.reshape(-1).astype(np.float64)
    pos = np.stack([np.clip(pts[:, 0] / 100, 0, 1) * (L_BINS - 1),
                    (np.clip(pts[:, 1], -AB_RANGE, AB_RANGE) + AB_RANGE) / (2 * AB_RANGE) * (AB_BINS - 1),
                    (np.clip(pts[:, 2], -AB_RANGE, AB_RANGE) + AB_RANGE) / (2 * AB_RANGE) * (AB_BINS - 1)], 1)
    dims = np.array([L_BINS, AB_BINS, AB_BINS])
    lo = np.minimum(np.floor(pos).astype(np.int64), dims - 2)
    frac = pos - lo
    side = [np.stack([1 - frac[:, d], frac[:, d]]) for d in range(3)]  # each axis: the lower and upper bin's share
    bins = [lo[:, d] + np.arange(2)[:, None] for d in range(3)]  # (2, n) each
    share = side[0][:, None, None] * side[1][None, :, None] * side[2][None, None, :] * wts  # 8 corners: (2, 2, 2, n)
    idx = (bins[0][:, None, None] * AB_BINS + bins[1][None, :, None]) * AB_BINS + bins[2][None, None, :]
    hist = np.bincount(idx.ravel(), weights=share.ravel(), minlength=BINS).astype(np.float64)
    total = hist.sum()
    return hist / total if total > 0 else hist


def photo_pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The photo's letterbox in CIELAB and what each of its pixels weighs as garment (`garment_weights`, no
    attention): what the query's colour and its garments (mga.garments) both read, computed once."""
    lab = to_lab(letterboxed(image))
    return lab, garment_weights(lab)


def garment_colour(image: Image.Image, attention: np.ndarray | None = None,
                   pixels: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The colour of the garment in a photo: its `histogram` under `garment_weights` (`attention`: the model's
    part attention on the photo's letterbox, for a query; none for a shop photo). `pixels`: its `photo_pixels`,
    when already computed."""
    lab, weights = pixels if pixels is not None else photo_pixels(image)
    if attention is not None:
        weights = weights * upsample(attention, lab.shape[0])
    return histogram(lab, weights)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance of two colour histograms: 0 the same colours, 1 nothing in common (and 1 when either is
    empty)."""
    if a.sum() <= 0 or b.sum() <= 0:
        return 1.0
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(a * b).sum()))))


@dataclass
class Shown:
    """Which photo of a product a card shows, in which colour, and the other colours it comes in."""

    image: int  # the photo's image number in the index
    colour: str  # its colour name ("" when the shop names none)
    others: list[str]  # the product's other colour names, nearest to the query's first
    in_query_colour: bool | None  # whether the product comes in the query's colour (None: not compared)


def choose(photos: Sequence[tuple[int, str]], query: np.ndarray | None,
           colour_of: Callable[[int], np.ndarray | None], best: int, wanted: str | None = None) -> Shown:
    """The photo of a product to show: `photos` are its (image number, colour name) pairs; `best` is the photo
    that matched. Asked for a colour by name (`wanted`), its photo (the matched one if it is of that colour); else
    the photo nearest to the `query`'s garment colour (`colour_of` gives a photo's, None when it cannot be read);
    with neither, the matched photo. Photos of the same colour name compete as one colour (its nearest photo)."""
    names = {i: c for i, c in photos}
    dist: dict[int, float] = {}
    if query is not None and query.sum() > 0:
        for i, _ in photos:
            h = colour_of(i)
            if h is not None:
                dist[i] = distance(query, h)
    in_colour: bool | None = None
    if wanted:
        same = [i for i, c in photos if c.lower() == wanted.lower()]
        pick = best if best in same else (min(same, key=lambda i: dist.get(i, 2.0)) if same else best)
    elif dist:
        pick = min(dist, key=lambda i: (dist[i], i != best))
        in_colour = dist[pick] <= NOT_IN_COLOUR
    else:
        pick = best
    colour = names.get(pick, "")
    nearest: dict[str, float] = {}
    for i, c in photos:
        if c and c != colour:
            nearest[c] = min(nearest.get(c, 2.0), dist.get(i, 2.0))
    others = sorted(nearest, key=lambda c: (nearest[c], c))
    return Shown(pick, colour, others, in_colour)


class GalleryColours:
    """Each gallery photo's garment colour, read from its thumbnail the first time a search needs it and kept (the
    `kept` most recently used), and each product's photos. `read` gives image i as a PIL image (or raises)."""

    def __init__(self, items: Sequence[dict], read: Callable[[int], Image.Image], kept: int = KEPT):
        self._items, self._read, self._kept = items, read, kept
        self._cache: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._photos: dict[str, list[tuple[int, str]]] | None = None
        self._names: list[str] | None = None
        self._lock = threading.Lock()

    def photos(self, item_id: str) -> list[tuple[int, str]]:
        """(image number, colour name) of every photo of a product, in index order."""
        if self._photos is None:
            with self._lock:
                if self._photos is None:
                    by: dict[str, list[tuple[int, str]]] = {}
                    for i, it in enumerate(self._items):
                        by.setdefault(str(it.get("item_id", "")), []).append((i, colour_name(it.get("meta", {}))))
                    self._photos = by
        return self._photos.get(item_id, [])

    def colours(self, item_id: str) -> set[str]:
        """The colour names a product comes in (lower case)."""
        return {c.lower() for _, c in self.photos(item_id) if c}

    def names(self) -> list[str]:
        """Every colour name of the shop's photos, one spelling per name regardless of case, sorted."""
        if self._names is None:
            self.photos("")  # builds the table
            seen: dict[str, str] = {}
            for photos in (self._photos or {}).values():
                for _, c in photos:
                    if c:
                        seen.setdefault(c.lower(), c)
            self._names = sorted(seen.values(), key=str.lower)
        return self._names

    def warm(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Read the colours of every photo that fits in the cache, in index order (a server calls it in the
        background at start-up, so that a first search reads none), until `stop()` says so; returns how many
        were read."""
        n = min(len(self._items), self._kept)
        for i in range(n):
            if stop():
                return i
            self(i)
        return n

    def forget(self) -> None:
        """Drop every colour read so far (the next searches read their photos again)."""
        with self._lock:
            self._cache.clear()

    def __call__(self, i: int) -> np.ndarray | None:
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        try:  # outside the lock: searches read their photos in parallel
            h: np.ndarray | None = garment_colour(self._read(i)).astype(np.float32)
        except Exception:  # a photo the gallery no longer has (or never could read): not a candidate colour
            h = None
        with self._lock:
            self._cache[i] = h
            while len(self._cache) > self._kept:
                self._cache.popitem(last=False)
        return h


def colour_name(meta: Any) -> str:
    """A photo's colour as the shop names it (its metadata's `color`, or `colour`), "" when none."""
    if not isinstance(meta, dict):
        return ""
    return str(meta.get("color") or meta.get("colour") or "").strip()
