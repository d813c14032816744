"""mga.imageio.load_image on real photos and on every kind of broken or unusual file a user may upload."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.memory import small_huge_image
from conftest import LUMA, LUMA_TINY, ROOT
from mga.config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE
from mga.decode_budget import FREE_DECODE_BYTES, DecodeBudget
from mga.imageio import ImageError, bicubic_pixels, load_image, load_photo
from ui.inputs import QUERY_MAX_SIDE


def real_jpegs(n: int = 3) -> list[Path]:
    photos = sorted(LUMA_TINY.glob("img/*/*/*/*.jpg"))
    assert photos, f"no photos under {LUMA_TINY}"
    return photos[:: max(1, len(photos) // n)][:n]


def full_size_jpeg() -> Path:
    photo = sorted(LUMA.glob("img/*/*/*/*.jpg"))[0]
    return photo


# --- real photos -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("photo", real_jpegs(), ids=lambda p: p.name)
def test_real_photo_loads_as_rgb_with_its_size(photo):
    img = load_image(photo)
    with Image.open(photo) as ref:
        assert img.size == ref.size
        ref_rgb = np.asarray(ref.convert("RGB"))
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), ref_rgb)


@pytest.mark.requires_shared
def test_photos_for_benchmarks_are_thumbnailed_keeping_their_shape_and_never_enlarged():
    big = full_size_jpeg()
    img, ref = load_photo(big, side=300), load_image(big)
    assert max(img.size) == 300 and abs(img.width / img.height - ref.width / ref.height) < 0.01
    assert load_photo(big, side=10_000).size == ref.size


def test_path_as_string_and_bytes_and_file_object_give_the_same_pixels():
    photo = real_jpegs(1)[0]
    a = np.asarray(load_image(str(photo)))
    b = np.asarray(load_image(photo.read_bytes()))
    with open(photo, "rb") as f:
        c = np.asarray(load_image(f))
    assert np.array_equal(a, b) and np.array_equal(a, c)


# --- broken files ------------------------------------------------------------------------------------------

def test_corrupt_bytes(tmp_path):
    bad = tmp_path / "noise.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="not an image file we can read") as exc:
        load_image(bad)
    assert "PIL" not in str(exc.value) and "WebP" in str(exc.value)


def test_jpeg_magic_then_garbage():
    """Starts like a JPEG (SOI + APP0), then garbage: PIL recognises nothing it can decode."""
    data = b"\xff\xd8\xff\xe0" + np.random.default_rng(2).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="corrupt|not an image"):
        load_image(data, name="garbage.jpg")


def test_png_with_broken_pixel_data(tmp_path):
    """A valid PNG header and size, then a damaged compressed stream."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    data[idat + 40: idat + 400] = b"\x00" * 360
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(bytes(data), name="broken.png")


@pytest.mark.requires_shared
def test_truncated_jpeg(tmp_path):
    data = full_size_jpeg().read_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as exc:
        load_image(half)
    assert "half.jpg" in str(exc.value)


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)


def test_zero_bytes_in_memory():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_text_file_named_jpg(tmp_path):
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is a shopping list, not a photo\n" * 20)
    with pytest.raises(ImageError, match="not an image"):
        load_image(txt)


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="no such file") as exc:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(exc.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = 20_000  # 400 Mpx: far over MAX_IMAGE_PIXELS, but a few kB as a 1-bit PNG
    assert side * side > MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        Image.new("1", (side, side), 0).save(bomb, optimize=True)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert bomb.stat().st_size < 5_000_000
    with pytest.raises(ImageError, match="image too large to decode safely") as exc:
        load_image(bomb)
    assert "400,000,000 pixels, more than 60,000,000" in str(exc.value)
    assert "DOS attack" not in str(exc.value) and "decompression bomb" not in str(exc.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns, load_image refuses
def test_palette_bomb(tmp_path):
    bomb = tmp_path / "bomb_p.png"
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        Image.new("P", (9_000, 9_000), 0).save(bomb, optimize=True)  # 81 Mpx
    finally:
        Image.MAX_IMAGE_PIXELS = old
    with pytest.raises(ImageError, match=r"image too large to decode safely \(9000x9000 pixels, more than 60,000,000"):
        load_image(bomb)


def test_huge_array_is_refused():
    arr = np.zeros((MAX_IMAGE_PIXELS // 1000 + 1, 1000), dtype=np.uint8)
    with pytest.raises(ImageError, match="pixels"):
        load_image(arr)


def test_tiny_image(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (5, 5), (200, 10, 10)).save(small)
    with pytest.raises(ImageError, match="pixels") as exc:
        load_image(small)
    assert "5x5" in str(exc.value) and str(MIN_IMAGE_SIDE) in str(exc.value)


def test_smallest_accepted_side(tmp_path):
    ok = tmp_path / "ok.png"
    Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE + 3), (1, 2, 3)).save(ok)
    assert load_image(ok).size == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE + 3)


# --- unusual modes -----------------------------------------------------------------------------------------

def test_rgba_transparent_areas_become_white(tmp_path):
    arr = np.zeros((40, 60, 4), dtype=np.uint8)
    arr[:, :30] = (255, 0, 0, 255)  # opaque red left half
    arr[:, 30:] = (0, 0, 255, 0)  # fully transparent (blue underneath) right half
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path))
    assert load_image(path).mode == "RGB" and out.shape == (40, 60, 3)
    assert (out[:, :30] == (255, 0, 0)).all()
    assert (out[:, 30:] == (255, 255, 255)).all()


def test_rgba_half_transparent_is_blended_on_white(tmp_path):
    arr = np.zeros((20, 20, 4), dtype=np.uint8)
    arr[...] = (0, 0, 0, 128)
    path = tmp_path / "half.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path)).astype(int)
    assert (abs(out - 127) <= 2).all()


def test_palette_png(tmp_path):
    img = Image.new("P", (32, 32), 0)
    img.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    path = tmp_path / "pal.png"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert (np.asarray(out) == (10, 200, 30)).all()


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 50, 60, 70] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 16, 32))
    path = tmp_path / "pal_t.png"
    img.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert (out[:, :16] == 255).all()
    assert (out[:, 16:] == (50, 60, 70)).all()


def test_16_bit_greyscale_png_keeps_its_content(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.shape == (48, 64, 3)
    assert out.min() < 20 and out.max() > 235, "content is lost (all-black or all-white)"
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0), "the ramp must stay a ramp"
    assert len(np.unique(out)) > 30


def test_16_bit_greyscale_dim_values_are_visible(tmp_path):
    """A 16-bit image that only uses 0..200 (e.g. a badly exported scan) still shows its content."""
    arr = np.tile(np.linspace(0, 200, 50).astype(np.uint16), (30, 1))
    path = tmp_path / "dim16.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out.max() - out.min() > 100


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path)  # red in CMYK
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    r, g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_greyscale_l(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (30, 20), 77).save(path)
    out = load_image(path)
    assert out.mode == "RGB" and (np.asarray(out) == 77).all()


def test_exif_rotated_jpeg_is_made_upright(tmp_path):
    src = Image.open(real_jpegs(1)[0]).convert("RGB")
    w, h = src.size
    assert w != h
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    src.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (h, w)
    # same pixels as PIL's own transpose (which rotates by 270)
    expected = np.asarray(src.transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(out).astype(int) - expected).mean() < 6
    assert load_image(out).size == (h, w), "the app decodes its query again: it must not be turned twice"


def test_broken_exif_does_not_cost_the_picture(tmp_path):
    path = tmp_path / "oddexif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 99  # nonsense orientation
    Image.new("RGB", (40, 30), (5, 6, 7)).save(path, exif=exif.tobytes())
    assert load_image(path).size == (40, 30)


def test_webp_still_with_alpha_and_reduced(tmp_path):
    arr = np.zeros((300, 800, 4), dtype=np.uint8)
    arr[:, :400] = (20, 120, 220, 255)  # opaque blue left half, transparent right half
    path = tmp_path / "alpha.webp"
    Image.fromarray(arr, "RGBA").save(path, lossless=True)
    full = np.asarray(load_image(path))
    assert full.shape == (300, 800, 3)
    assert (full[:, :400] == (20, 120, 220)).all() and (full[:, 400:] == 255).all()
    small = load_image(path, max_side=200)  # decoded by libwebp at 1/4 scale
    assert small.size == (200, 75) and small.info["original_size"] == (800, 300)
    px = np.asarray(small).astype(int)
    assert np.abs(px[:, :95] - (20, 120, 220)).max() <= 2 and (px[:, 105:] == 255).all()


def test_webp_lossy_exif_rotated_animated_and_truncated(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (400, 200), (200, 40, 40)).save(tmp_path / "turned.webp", quality=90, exif=exif.tobytes())
    out = load_image(tmp_path / "turned.webp", max_side=100)
    assert out.size == (50, 100) and out.info["original_size"] == (200, 400)
    assert np.abs(np.asarray(out).astype(int) - (200, 40, 40)).max() <= 8
    frames = [Image.new("RGB", (64, 48), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert (np.asarray(load_image(tmp_path / "anim.webp", max_side=32)) == (250, 0, 0)).all()  # Pillow: frame 1
    data = (tmp_path / "turned.webp").read_bytes()
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(data[: len(data) // 2], name="half.webp")


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_large_palette_image_with_transparency_is_reduced_in_tiles(tmp_path, fmt):
    """Reduced a tile at a time (never a full-size RGBA copy): the same colours, transparency on white."""
    img = Image.new("P", (3000, 1234), 1)
    img.putpalette([0, 0, 0, 50, 160, 70] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 1500, 1234))
    path = tmp_path / f"pal.{fmt}"
    img.save(path, transparency=0)
    out = load_image(path, max_side=600)
    assert out.size == (600, 247) and out.info["original_size"] == (3000, 1234)
    px = np.asarray(out).astype(int)
    assert (px[:, :295] == 255).all() and (np.abs(px[:, 305:] - (50, 160, 70)) <= 1).all()


def test_large_decodes_take_turns_within_the_budget_and_small_ones_do_not_wait():
    budget = DecodeBudget(300_000_000)
    running, most, lock = [0], [0], threading.Lock()

    def decode(nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=decode, args=(200_000_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and budget.free == 300_000_000, "two 200 MB decodes never overlap under 300 MB"
    with budget.hold(10**12):  # more than the whole budget: runs alone
        started = time.monotonic()
        decode(FREE_DECODE_BYTES - 1)  # a small decode passes though the budget is spent
        assert time.monotonic() - started < 1


# --- in-memory sources -------------------------------------------------------------------------------------

def test_uint8_rgb_array():
    arr = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = load_image(arr)
    assert out.mode == "RGB" and out.size == (32, 24)
    assert np.array_equal(np.asarray(out), arr)


def test_greyscale_and_rgba_arrays():
    grey = np.full((20, 20), 90, dtype=np.uint8)
    assert (np.asarray(load_image(grey)) == 90).all()
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)  # fully transparent
    assert (np.asarray(load_image(rgba)) == 255).all()


def test_float_array_is_clipped_to_uint8():
    arr = np.full((20, 20, 3), 300.0)
    arr[0, 0] = -5
    out = np.asarray(load_image(arr))
    assert out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("shape", [(0, 0, 3), (5,), (2, 3, 4, 5)])
def test_arrays_that_are_not_images(shape):
    with pytest.raises(ImageError, match="not an image"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_raw_png_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (33, 17), (9, 8, 7)).save(buf, "PNG")
    out = load_image(buf.getvalue())
    assert out.size == (33, 17) and np.asarray(out)[0, 0].tolist() == [9, 8, 7]


def test_pil_image_source_is_converted():
    out = load_image(Image.new("LA", (20, 20), (0, 0)))
    assert out.mode == "RGB" and (np.asarray(out) == 255).all()


# --- reduced decoding ----------------------------------------------------------------------------------------

@pytest.mark.requires_shared
def test_max_side_reduces_and_remembers_the_original_size():
    path = full_size_jpeg()
    full = load_image(path)
    small = load_image(path, max_side=300)
    assert max(small.size) == 300 and small.info["original_size"] == full.size
    ratio = full.width / full.height
    assert abs(small.width / small.height - ratio) < 0.01
    # the reduced DCT decode looks like a plain downscale of the full decode
    plain = full.resize(small.size, Image.BICUBIC)
    assert np.abs(np.asarray(small).astype(int) - np.asarray(plain).astype(int)).mean() < 4


def test_max_side_larger_than_the_image_changes_nothing():
    path = real_jpegs(1)[0]
    assert np.array_equal(np.asarray(load_image(path, max_side=4000)), np.asarray(load_image(path)))


@pytest.mark.requires_shared
def test_max_side_of_an_exif_rotated_jpeg(tmp_path):
    src = Image.open(full_size_jpeg()).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    src.save(path, exif=exif.tobytes(), quality=90)
    out = load_image(path, max_side=200)
    assert src.width < src.height, "a portrait photo, shown as landscape once turned"
    assert out.info["original_size"] == (src.height, src.width)
    assert out.width == 200 and out.height < 200


def test_max_side_for_arrays_and_pil_images():
    arr = np.zeros((400, 100, 3), np.uint8)
    out = load_image(arr, max_side=200)
    assert out.size == (50, 200) and out.info["original_size"] == (100, 400)
    assert load_image(Image.fromarray(arr), max_side=200).size == (50, 200)


# --- resampling ------------------------------------------------------------------------------------------------

@pytest.mark.requires_shared
@pytest.mark.parametrize("case", ["shrink a photo", "enlarge a close-up"])
def test_bicubic_pixels_is_pillows_antialiased_bicubic(case):
    """torch's uint8 kernel stands in for Pillow's bicubic everywhere the model's input is made: it must give
    the same pixels up to rounding, down (antialiased) and up, or the embedded weights would see other images."""
    photo = load_image(full_size_jpeg(), max_side=576)
    img = photo if case == "shrink a photo" else photo.crop((150, 200, 241, 330))
    size = (173, 211) if case == "shrink a photo" else (250, 357)
    ours = bicubic_pixels(img, size).permute(1, 2, 0).numpy().astype(int)
    pillow = np.asarray(img.resize(size, Image.BICUBIC)).astype(int)
    diff = np.abs(ours - pillow)
    assert ours.shape == pillow.shape == (size[1], size[0], 3)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    assert np.array_equal(bicubic_pixels(img, img.size).permute(1, 2, 0).numpy(), np.asarray(img)), "same size: as is"


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    """A sparse 2 GB '.jpg' costs nothing on disk; reading it whole would cost 2 GB of memory."""
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(2_000_000_000)
    with pytest.raises(ImageError, match="2,000 MB, more than the 100 MB"):
        load_image(big)


def test_sixteen_bit_greyscale_keeps_its_tones_and_fits_max_side(tmp_path):
    """16-bit images convert a block of rows at a time (no float64 copy of the whole image) to the same tones."""
    ramp = (np.arange(300 * 200, dtype=np.uint32).reshape(300, 200) * 65535 // (300 * 200 - 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    img = load_image(tmp_path / "ramp16.png")
    expected = (ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert img.mode == "RGB" and np.abs(np.asarray(img)[..., 0].astype(int) - expected).max() <= 1
    small = load_image(tmp_path / "ramp16.png", max_side=64)
    assert max(small.size) == 64 and small.info["original_size"] == (200, 300)


# --- memory: files tiny on disk that decode to ~60 MP ------------------------------------------------------

MB = 1 << 20


def attack_file(folder: Path, kind: str) -> Path:
    path = small_huge_image(folder, kind)
    assert path.stat().st_size < 100_000
    return path


# A fresh interpreter decodes `copies` queries of the file at once, one thread each, as the app's searches do, and
# prints its peak resident memory over what it held before, with the decoded images' sizes. Linux's VmHWM, reset
# first: getrusage's ru_maxrss would start from the parent's size (kept across fork and exec).
PEAK_GROWTH = """
import json, sys, threading
from mga.imageio import load_image
path, max_side, copies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the current size
before = status("VmRSS")
sizes = []
threads = [threading.Thread(target=lambda: sizes.append(load_image(path, max_side=max_side).size))
           for _ in range(copies)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"growth": status("VmHWM") - before, "sizes": sizes}))
"""


def peak_growth(path: Path, copies: int = 1) -> int:
    """Peak memory growth (bytes) of `copies` simultaneous query decodes of `path` in a fresh process."""
    run = subprocess.run([sys.executable, "-c", PEAK_GROWTH, str(path), str(QUERY_MAX_SIDE), str(copies)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["sizes"] == [[QUERY_MAX_SIDE, QUERY_MAX_SIDE]] * copies, "every decode gives the reduced query"
    return out["growth"]


needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads memory from /proc")


@needs_proc
@pytest.mark.parametrize("kind", ["gif", "png", "webp"])
def test_a_tiny_file_of_a_huge_image_decodes_in_bounded_memory(tmp_path, kind):
    """A 60 MP image costs 60 MB (GIF, palette PNG) to 240 MB (RGBA) decoded once; its conversion to a query must
    not add full-size RGBA copies on top (it was 1.2 GB for the GIF and the PNG, 0.9 GB for the WebP)."""
    growth = peak_growth(attack_file(tmp_path, kind))
    assert growth < 400 * MB, f"{kind}: {growth / MB:.0f} MB at peak"


@needs_proc
def test_eight_huge_queries_at_once_stay_bounded(tmp_path):
    """The app runs up to 8 searches at once: 8 such GIFs decoded together took 7.9 GB at peak."""
    growth = peak_growth(attack_file(tmp_path, "gif"), copies=8)
    assert growth < 2000 * MB, f"{growth / MB:.0f} MB at peak"
