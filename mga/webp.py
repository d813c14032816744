"""Still WebP images through libwebp's own decoder, scaled on the way into one buffer of ours (mga.imageio's route
for WebP when the library is at hand).

Pillow decodes a WebP through libwebp's animation decoder: two full-size RGBA canvases and a copy of the frame,
0.7 GB for a 38-byte 60 MP file. libwebp's advanced API (webp/decode.h, ABI 2.x) decodes a still image straight
into our buffer, scaled on the way; these structures mirror that header's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import numpy as np
from PIL import Image

WEBP_ABI = 0x0209
WEBP_STATUS = {1: "out of memory", 2: "invalid parameter", 3: "bitstream error", 4: "unsupported feature",
               5: "suspended", 6: "user abort", 7: "not enough data"}


class _WebPFeatures(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("has_alpha", ctypes.c_int),
                ("has_animation", ctypes.c_int), ("format", ctypes.c_int), ("pad", ctypes.c_uint32 * 5)]


class _WebPRGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", ctypes.c_int), ("size", ctypes.c_size_t)]


class _WebPYUVABuffer(ctypes.Structure):
    _fields_ = ([(n, ctypes.c_void_p) for n in ("y", "u", "v", "a")]
                + [(n, ctypes.c_int) for n in ("y_stride", "u_stride", "v_stride", "a_stride")]
                + [(n, ctypes.c_size_t) for n in ("y_size", "u_size", "v_size", "a_size")])


class _WebPBuffers(ctypes.Union):
    _fields_ = [("RGBA", _WebPRGBABuffer), ("YUVA", _WebPYUVABuffer)]


class _WebPDecBuffer(ctypes.Structure):
    _fields_ = [("colorspace", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("is_external_memory", ctypes.c_int), ("u", _WebPBuffers), ("pad", ctypes.c_uint32 * 4),
                ("private_memory", ctypes.c_void_p)]


class _WebPDecoderOptions(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in (
        "bypass_filtering", "no_fancy_upsampling", "use_cropping", "crop_left", "crop_top", "crop_width",
        "crop_height", "use_scaling", "scaled_width", "scaled_height", "use_threads", "dithering_strength", "flip",
        "alpha_dithering_strength")] + [("pad", ctypes.c_uint32 * 5)]


class _WebPDecoderConfig(ctypes.Structure):
    _fields_ = [("input", _WebPFeatures), ("output", _WebPDecBuffer), ("options", _WebPDecoderOptions)]


@functools.lru_cache(maxsize=None)
def _libwebp() -> ctypes.CDLL | None:
    """libwebp (the copy Pillow's wheel ships, else the system's) when its decoder ABI is the one above, else None
    (then Pillow decodes WebP, within DECODE_BUDGET)."""
    pil = Path(Image.__file__).parent
    bundled = [*sorted(pil.parent.glob("pillow.libs/libwebp-*.so*")), *sorted(pil.glob(".dylibs/libwebp.*"))]
    for name in [*bundled, "system"]:
        if name == "system":
            name = ctypes.util.find_library("webp")  # runs ldconfig: only when Pillow ships none
            if not name:
                break
        try:
            lib = ctypes.CDLL(str(name))
            config_p = ctypes.POINTER(_WebPDecoderConfig)
            lib.WebPInitDecoderConfigInternal.argtypes = [config_p, ctypes.c_int]
            lib.WebPGetFeaturesInternal.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                                    ctypes.POINTER(_WebPFeatures), ctypes.c_int]
            lib.WebPDecode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, config_p]
            lib.WebPFreeDecBuffer.argtypes = [ctypes.POINTER(_WebPDecBuffer)]
            lib.WebPFreeDecBuffer.restype = None
            if lib.WebPInitDecoderConfigInternal(ctypes.byref(_WebPDecoderConfig()), WEBP_ABI):
                return lib
        except (OSError, AttributeError):  # not a loadable libwebp, or one without the advanced API
            continue
    return None


def webp_config(data: bytes, size: tuple[int, int]) -> _WebPDecoderConfig | None:
    """libwebp's decoder set up for this WebP file (its header read into .input), or None when libwebp is not at
    hand or the file is animated (Pillow decodes those)."""
    lib, config = _libwebp(), _WebPDecoderConfig()
    if lib is None or not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), WEBP_ABI):
        return None
    status = lib.WebPGetFeaturesInternal(data, len(data), ctypes.byref(config.input), WEBP_ABI)
    if status or config.input.has_animation or (config.input.width, config.input.height) != size:
        return None
    return config


def webp_decode(data: bytes, config: _WebPDecoderConfig, factor: int) -> Image.Image:
    """A still WebP decoded by libwebp (`config` from _webp_config), scaled down by `factor` on the way: RGB, or
    RGBA if it has alpha (not premultiplied)."""
    width, height = -(-config.input.width // factor), -(-config.input.height // factor)
    channels = 4 if config.input.has_alpha else 3
    pixels = np.empty((height, width, channels), dtype=np.uint8)
    if factor > 1:
        config.options.use_scaling, config.options.scaled_width, config.options.scaled_height = 1, width, height
    out = config.output
    out.colorspace = 1 if channels == 4 else 0  # MODE_RGBA or MODE_RGB
    out.is_external_memory = 1
    out.u.RGBA.rgba, out.u.RGBA.stride, out.u.RGBA.size = pixels.ctypes.data, width * channels, pixels.nbytes
    lib = _libwebp()
    status = lib.WebPDecode(data, len(data), ctypes.byref(config))
    lib.WebPFreeDecBuffer(ctypes.byref(config.output))
    if status:
        raise OSError(f"WebP: {WEBP_STATUS.get(status, f'status {status}')}")
    return Image.fromarray(pixels)
