"""Safe image loading: every way a user's file can be wrong ends in one clear ImageError."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

ImageSource = Union[str, Path, bytes, BinaryIO, Image.Image, np.ndarray]

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


class ImageError(ValueError):
    """A user-facing problem with one image: the message says what and, where it helps, what to do."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, P, LA, I;16, I, F, CMYK, L, 1) to RGB (an RGB image itself: callers pass their own
    copy); transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: image is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} we decode "
            "(a decompression bomb or a scan far larger than needed); downscale it first."
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(f"{name}: image is only {width}x{height} pixels; at least {MIN_IMAGE_SIDE} px per side is needed.")


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


def load_image(source: ImageSource, name: str | None = None, max_side: int | None = None) -> Image.Image:
    """Decode `source` into an upright RGB PIL image, or raise ImageError saying why not.

    Accepts a path, raw bytes, a file object, a PIL image or an HxW(xC) uint8 array. With max_side the image
    is reduced to fit max_side x max_side, and a JPEG is decoded at a reduced DCT scale on the way (2-8x
    faster for big photos); its upright size before reduction is kept in `img.info["original_size"]`.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise ImageError(f"{label}: an array of shape {source.shape} is not an image.")
        arr = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., :4] if arr.ndim == 3 else arr)
        _check_size(img.width, img.height, label)
        return _reduced(_to_rgb(img), img.size, max_side)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label)
        img = _to_rgb(ImageOps.exif_transpose(source))
        return _reduced(img, img.size, max_side)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{label}: no such file.")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file.")
        data = path.read_bytes()
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read()
    if len(data) == 0:
        raise ImageError(f"{label}: the file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(img.width, img.height, label)
            size = img.size
            if max_side:
                scale = max_side / max(size)
                img.draft("RGB", (math.ceil(size[0] * scale), math.ceil(size[1] * scale)))
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: image too large to decode safely ({exc}).") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not an image file PIL can read (JPEG, PNG, WebP, BMP, TIFF, GIF ...).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: the image is corrupt or truncated ({exc}).") from exc
    try:
        before = img.size
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright photo
        if img.size != before:  # turned by 90 degrees
            size = size[::-1]
    except Exception:  # a broken EXIF block should not cost the picture itself
        pass
    return _reduced(_to_rgb(img), size, max_side)


def _reduced(img: Image.Image, original_size: tuple[int, int], max_side: int | None) -> Image.Image:
    img = shrink(img, max_side)
    img.info["original_size"] = tuple(original_size)
    return img
