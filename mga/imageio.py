"""Safe image loading: every way a user's file can be wrong ends in one clear ImageError, and no file, however
small, costs more memory than its decoded size bounded here (a tile at a time, libwebp's scaled decoding, and a
budget that large decodes take turns in)."""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, PHOTO_SIDE
from .decode_budget import DECODE_BUDGET, decode_bytes
from .webp import webp_config, webp_decode

ImageSource = Union[str, Path, bytes, BinaryIO, Image.Image, np.ndarray]

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image

FORMATS = "JPEG, PNG, WebP, BMP, TIFF, GIF"
# Pixels converted at a time (RGBA, white background, RGB): a few MB, however large the image.
TILE_PIXELS = 1 << 20
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


class ImageError(ValueError):
    """A user-facing problem with one image: the message says what and, where it helps, what to do."""


def _tiles(width: int, height: int, step: int = 1) -> Iterator[tuple[int, int, int, int]]:
    """Boxes covering a width x height image, about TILE_PIXELS each, their sides multiples of `step` (but the
    last ones), so that a box reduction by `step` of each tile is that of the whole image."""
    tile_w = width if width * step <= TILE_PIXELS else max(step, math.isqrt(TILE_PIXELS) // step * step)
    tile_h = max(step, TILE_PIXELS // tile_w // step * step)
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            yield left, top, min(width, left + tile_w), min(height, top + tile_h)


def _to_8bit(img: Image.Image, lo: float, scale: float) -> Image.Image:
    """(pixel - lo) * scale as 8-bit greyscale, a tile at a time: a 16-bit or float image converted whole
    through float64 would cost 8 bytes per pixel (gigabytes for a small, highly compressed 56 MP PNG)."""
    out = np.empty((img.height, img.width), dtype=np.uint8)
    for x0, y0, x1, y1 in _tiles(*img.size):
        tile = np.asarray(img.crop((x0, y0, x1, y1)), dtype=np.float32)
        out[y0:y1, x0:x1] = np.clip((tile - lo) * scale, 0, 255)
    return Image.fromarray(out, "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, P, LA, I;16, I, F, CMYK, L, 1) to RGB (an RGB image itself: callers pass their own
    copy); transparency is composited on white. It copies the whole image: _rgb_reduced calls it a tile at a time."""
    img = _eight_bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and float images as 8-bit greyscale (the range stretched to 0-255); other modes unchanged."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        hi = float(img.getextrema()[1])
        return _to_8bit(img, 0.0, 255.0 / (65535.0 if hi > 255 else max(hi, 1.0)))
    if img.mode == "F":
        lo, hi = (float(x) for x in img.getextrema())
        return _to_8bit(img, lo, 255.0 / max(hi - lo, 1e-9))
    return img


def _rgb_reduced(img: Image.Image, factor: int) -> Image.Image:
    """`img` (any mode) as RGB, box-reduced by a whole `factor`, converted a tile at a time: a 60 MP palette or RGBA
    image costs its own decode and a few MB more, not full-size RGBA, white background and RGB copies."""
    img = _eight_bit(img)
    if img.mode == "RGB":
        return img.reduce(factor) if factor > 1 else img
    out = Image.new("RGB", (-(-img.width // factor), -(-img.height // factor)))
    for box in _tiles(*img.size, step=factor):
        tile = _to_rgb(img.crop(box))
        out.paste(tile.reduce(factor) if factor > 1 else tile, (box[0] // factor, box[1] // factor))
    return out


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: image too large to decode safely ({width}x{height} pixels, more than {MAX_IMAGE_PIXELS:,}); "
            "downscale it first."
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(f"{name}: image is only {width}x{height} pixels; at least {MIN_IMAGE_SIDE} px per side "
                         f"is needed.")


def bicubic_pixels(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB `img` resized to size (w, h) as uint8 pixels (3, h, w): Pillow's antialiased bicubic, computed by torch's
    uint8 kernel (what the model sees, everywhere: faster than Pillow's, within 2 levels of it)."""
    # (1, 3, h, w) over the HWC array: channels-last memory, the kernel's fast path (strides it checks exactly)
    x = torch.from_numpy(np.array(img, dtype=np.uint8))[None].permute(0, 3, 1, 2)
    if (x.shape[3], x.shape[2]) == tuple(size):
        return x[0]
    return F.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True)[0]


def fit_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) of a width x height image scaled to fit side x side, aspect kept, at least a pixel each way."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(img: Image.Image, max_side: int | None) -> Image.Image:
    """RGB `img` reduced to fit max_side x max_side (a new image; the image itself when it already fits)."""
    if not max_side or max(img.size) <= max_side:
        return img
    return Image.fromarray(bicubic_pixels(img, fit_size(*img.size, max_side)).permute(1, 2, 0).numpy())


def _read_bytes(source: str | Path | bytes | BinaryIO, label: str) -> bytes:
    """The encoded bytes of a path, bytes or file object, or ImageError (no such file, a folder, too large)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{label}: no such file.")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file.")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:  # checked before reading: a sparse multi-GB file would be read whole
            raise ImageError(f"{label}: the file is {size / 1e6:,.0f} MB, more than the "
                             f"{MAX_IMAGE_BYTES / 1e6:,.0f} MB we read; a photo this large is not needed, "
                             f"downscale it first.")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc}).") from exc
    if isinstance(source, bytes):
        return source
    return source.read()


def load_image(source: ImageSource, name: str | None = None, max_side: int | None = None) -> Image.Image:
    """Decode `source` into an upright RGB PIL image, or raise ImageError saying why not.

    Accepts a path, raw bytes, a file object, a PIL image or an HxW(xC) uint8 array. With max_side the image
    is reduced to fit max_side x max_side, and a JPEG (and a still WebP) is decoded at a reduced scale on the way
    (2-8x faster for big photos); its upright size before reduction is kept in `img.info["original_size"]`.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise ImageError(f"{label}: an array of shape {source.shape} is not an image.")
        arr = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., :4] if arr.ndim == 3 else arr)
        _check_size(img.width, img.height, label)
        return _reduced(img, img.size, max_side)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label)
        img = ImageOps.exif_transpose(source)
        return _reduced(img, img.size, max_side)
    data = _read_bytes(source, label)
    if len(data) == 0:
        raise ImageError(f"{label}: the file is empty (0 bytes).")
    try:
        img = Image.open(io.BytesIO(data))  # Pillow only warns up to twice MAX_IMAGE_PIXELS: _check_size refuses
        _check_size(img.width, img.height, label)
        return _decode(img, data, max_side)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # over twice MAX_IMAGE_PIXELS: Pillow refuses it while opening
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels, " if pixels else ""
        raise ImageError(f"{label}: image too large to decode safely ({size}more than {MAX_IMAGE_PIXELS:,}); "
                         "downscale it first.") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not an image file we can read ({FORMATS}).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: the image is corrupt or truncated ({exc}).") from exc


def _decode(img: Image.Image, data: bytes, max_side: int | None) -> Image.Image:
    """An opened image file decoded, reduced within max_side and upright, holding DECODE_BUDGET for as long as its
    full-size pixels exist (what its header says they take)."""
    size = img.size
    factor = _factor(img.size, max_side)
    webp = webp_config(data, img.size) if img.format == "WEBP" else None  # a still WebP that libwebp can take
    if max_side and webp is None:
        scale = max_side / max(img.size)
        img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))  # JPEG: a DCT scale
        factor = _factor(img.size, max_side)
    with DECODE_BUDGET.hold(decode_bytes(img, factor, webp is not None)):
        if webp is not None:
            full = webp_decode(data, webp, factor)
        else:
            img.load()  # before reading EXIF: a PNG's getexif() would load it, swallowing its errors
            full = img
        orientation = _orientation(img)
        if webp is not None:
            img.close()
            factor = _factor(full.size, max_side)
        out = _rgb_reduced(full, factor)
        if out is not full:
            full.close()  # the full-size pixels go now, not when the caller lets go of them
    out = shrink(out, max_side)
    if orientation in UPRIGHT:
        out = out.transpose(UPRIGHT[orientation])
    out.info = {"original_size": size[::-1] if orientation in (5, 6, 7, 8) else size}  # no EXIF left to turn it
    return out


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation of an opened image file, None when it has none or a broken EXIF block (that should
    not cost the picture itself)."""
    try:
        return img.getexif().get(0x0112)
    except Exception:
        return None


def _factor(size: tuple[int, int], max_side: int | None) -> int:
    """The whole factor by which an image more than twice too large for max_side is box-reduced first."""
    return max(size) // max_side if max_side and max(size) >= 2 * max_side else 1


def _reduced(img: Image.Image, original_size: tuple[int, int], max_side: int | None) -> Image.Image:
    """`img` as RGB within max_side. An image more than twice too large is first box-reduced by a whole factor,
    a tile at a time, before any full-size RGB copy exists (what a JPEG's draft decoding does for the others)."""
    img = shrink(_rgb_reduced(img, _factor(img.size, max_side)), max_side)
    img.info["original_size"] = tuple(original_size)
    return img


def load_photo(source: ImageSource, side: int = PHOTO_SIDE) -> Image.Image:
    """A photo as the benchmarks and the fitted detectors see it: decoded, then thumbnailed to `side` (the model
    letterboxes it anyway; this keeps the photos' sizes alike, whatever camera took them)."""
    img = load_image(source)
    img.thumbnail((side, side))
    return img
