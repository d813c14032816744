"""What users send: the query photo (decoded, optionally auto-cropped), the number of results and the category."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from mga import MIN_IMAGE_SIDE, ImageError, category_key, fit_size, load_image, shrink

from .settings import ALL_CATEGORIES, MAX_K

# The photo to crop by hand is shown at this side (clicks on it are mapped back to the query's pixels).
CROP_VIEW_SIDE = 480
# Queries are decoded to at most this side: the model sees 2 x its input side, the overlays DISPLAY_MAX_SIDE, and
# a session keeps its last query, so a 50 MP upload must not stay 150 MB in memory.
QUERY_MAX_SIDE = 1600


def decode_query(value: Any, name: str = "query image") -> Image.Image:
    """A query from the UI or API (file path, bytes, PIL, array, or None) -> RGB PIL, or ImageError."""
    if value is None:
        raise ImageError("No query image: upload a photo, take one with the webcam, or paste one.")
    if isinstance(value, dict):  # an ImageEditor value: use what the user cropped
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
        if value is None:
            raise ImageError("No query image in the cropper: load a photo first.")
    return load_image(value, name=name, max_side=QUERY_MAX_SIDE)


def autocrop(img: Image.Image, threshold: float = 28.0, margin: float = 0.04,
             min_fraction: float = 0.05) -> Image.Image:
    """Trim a plain background (studio white, a wall) around the garment: the box of pixels that differ from
    the border's median colour, plus a small margin. Returns the image unchanged when nothing sensible is found
    (busy backgrounds, a garment filling the frame)."""
    small = img.copy()
    small.thumbnail((256, 256))
    a = np.asarray(small, dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    if np.mean(np.abs(border - bg).max(axis=1) > threshold) > 0.3:  # the border is not one colour
        return img
    mask = np.abs(a - bg).max(axis=2) > threshold
    ys, xs = np.nonzero(mask)
    if len(xs) < min_fraction * mask.size:
        return img
    sx, sy = img.width / a.shape[1], img.height / a.shape[0]
    x0, x1 = np.percentile(xs, [0.5, 99.5])
    y0, y1 = np.percentile(ys, [0.5, 99.5])
    mx, my = margin * img.width, margin * img.height
    box = (max(0, int(x0 * sx - mx)), max(0, int(y0 * sy - my)),
           min(img.width, int((x1 + 1) * sx + mx)), min(img.height, int((y1 + 1) * sy + my)))
    if box[2] - box[0] < 16 or box[3] - box[1] < 16:
        return img
    if (box[2] - box[0]) * (box[3] - box[1]) > 0.97 * img.width * img.height:
        return img
    return img.crop(box)


def parse_category(category: str | None, categories: Sequence[str]) -> str | None:
    """'All', '' or None -> no filter; a known category in any spelling -> the index's name for it; anything
    else -> ValueError with the list."""
    if category is None or category == "" or category == ALL_CATEGORIES:
        return None
    known = {category_key(c): c for c in categories}
    if not isinstance(category, str) or category_key(category) not in known:
        shown = category if len(str(category)) <= 60 else f"{str(category)[:60]}..."  # never echo a huge string
        raise ValueError(f"Unknown category {shown!r}; choose {ALL_CATEGORIES!r} or one of: {', '.join(categories)}")
    return known[category_key(category)]


def parse_k(k: Any) -> int:
    """The number of results: a whole number from 1 to MAX_K (ints, integral floats, digit strings)."""
    try:
        f = float(k) if not isinstance(k, bool) else float("nan")
    except (TypeError, ValueError):
        f = float("nan")
    if not f.is_integer() or not 1 <= f <= MAX_K:
        raise ValueError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")
    return int(f)


def crop_view(query: Image.Image, corners: Sequence[tuple[int, int]]) -> Image.Image:
    """The query at CROP_VIEW_SIDE with the corners clicked so far (in the query's pixels): a dot for the first,
    the box for two. `query` may come already reduced (UIResult.view), its full size in `info["original_size"]`."""
    from PIL import ImageDraw

    full = query.info.get("original_size", query.size)
    view = shrink(query, CROP_VIEW_SIDE)
    view = view.copy() if view is query else view
    scale = view.width / full[0]
    draw = ImageDraw.Draw(view)
    points = [(x * scale, y * scale) for x, y in corners]
    if len(points) == 1:
        (x, y), r = points[0], max(3, CROP_VIEW_SIDE // 80)
        draw.ellipse([x - r, y - r, x + r, y + r], fill="#00c853")
    elif len(points) == 2:
        (x0, y0), (x1, y1) = points
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline="#00c853",
                       width=max(2, CROP_VIEW_SIDE // 160))
    return view


def add_corner(corners: Sequence[tuple[int, int]], clicked: Sequence[int], query: Image.Image
               ) -> list[tuple[int, int]]:
    """A click on the crop view of `query` (crop_view: its pixels) as a corner in the pixels of the full query (its
    size in `info["original_size"]` when it came reduced); a third click starts anew."""
    width, height = query.info.get("original_size", query.size)
    shown = fit_size(*query.size, CROP_VIEW_SIDE)[0] if max(query.size) > CROP_VIEW_SIDE else query.width
    scale = width / shown
    corner = (min(width, round(clicked[0] * scale)), min(height, round(clicked[1] * scale)))
    return [corner] if len(corners) != 1 else [corners[0], corner]


def crop_to_corners(query: Image.Image, corners: Sequence[tuple[int, int]]) -> Image.Image:
    """The part of the query between two clicked corners, or ImageError saying what to do."""
    if len(corners) != 2:
        raise ImageError("Crop by hand: click two opposite corners of the garment on the photo first.")
    (x0, y0), (x1, y1) = corners
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if min(box[2] - box[0], box[3] - box[1]) < MIN_IMAGE_SIDE:
        raise ImageError(f"Crop by hand: the box is under {MIN_IMAGE_SIDE} px a side; click two corners further apart.")
    return query.crop(box)
