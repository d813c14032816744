"""What the Gradio app needs beyond layout: settings, start-up with a visible fallback, query decoding and
cropping, and turning a SearchResult into gallery items, overlays, charts and API JSON.

Everything here is plain Python (no gradio import), so it is unit-testable and the bench can time exactly
what the app's callbacks run.
"""
from __future__ import annotations

import argparse
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .config import ASSETS_DIR, DEFAULT_INDEX_DIR, PROJECT_ROOT
from .explain import overlay
from .hub import WeightsError, describe_weights, load_model
from .imageio import ImageError, load_image
from .index import IndexMismatchError
from .search import Match, SearchEngine, SearchResult
from .views import FULL_BOX

ALL_CATEGORIES = "All"
MAX_K = 50
DEFAULT_K = 10
EXAMPLES_DIR = ASSETS_DIR / "examples"
EXAMPLE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
# Largest side of the images the app shows (overlays): browsers don't need a 6000 px photo.
DISPLAY_MAX_SIDE = 320
# Heatmaps come from a coarse token grid: computing them at 256 px (then resized for display) loses nothing
# visible and keeps "explain" cheap for k results.
HEATMAP_SIDE = 256


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class AppSettings:
    weights: str | None  # Hub id `org/name[@rev]`, a checkpoint folder, or None (embedded default)
    index: str
    host: str
    port: int | None
    device: str = "cpu"
    concurrency: int = 8


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AppSettings:
    """Command line first, then the environment (as a Hugging Face Space sets it), then defaults."""
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(prog="python app.py", description="MGA fashion visual search (Gradio app)")
    p.add_argument("--weights", default=env.get("MGA_WEIGHTS") or None,
                   help="Hub id org/name[@revision] or checkpoint folder (env MGA_WEIGHTS); "
                        "default: the embedded weights in assets/mga-default")
    p.add_argument("--index", default=env.get("MGA_INDEX") or str(DEFAULT_INDEX_DIR),
                   help="index folder built by `python -m index_builder` (env MGA_INDEX; default assets/demo-index)")
    p.add_argument("--host", default=env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                   help="interface to listen on (env GRADIO_SERVER_NAME; default 127.0.0.1, a Space uses 0.0.0.0)")
    p.add_argument("--port", type=int, default=int(env["GRADIO_SERVER_PORT"]) if env.get("GRADIO_SERVER_PORT") else None,
                   help="port (env GRADIO_SERVER_PORT; default: Gradio's, 7860 or the next free one)")
    p.add_argument("--device", default=env.get("MGA_DEVICE") or "cpu", help="torch device (env MGA_DEVICE)")
    p.add_argument("--concurrency", type=int, default=int(env.get("MGA_CONCURRENCY") or 8),
                   help="searches run at once; the rest wait in the queue (env MGA_CONCURRENCY; default 8)")
    a = p.parse_args(argv)
    return AppSettings(a.weights, a.index, a.host, a.port, a.device, max(1, a.concurrency))


# ------------------------------------------------------------------------------------------------ start-up
@dataclass
class LoadedEngine:
    engine: SearchEngine
    requested_weights: str | None
    weights_label: str  # what actually got loaded
    fallback_reason: str | None = None  # why the requested weights are not the ones in use
    load_seconds: float = 0.0

    @property
    def status_markdown(self) -> str:
        info = self.engine.info
        line = (f"**Weights:** {self.weights_label} (fingerprint `{info.get('fingerprint', '?')}`) · "
                f"**Index:** `{shown_path(info.get('index', '?'))}` — {info.get('images', '?')} images, {info.get('items', '?')} items, "
                f"{len(self.engine.categories)} categories")
        if self.fallback_reason:
            line = f"⚠️ {self.fallback_reason}\n\n{line}"
        return line


def shown_path(path: str | Path) -> str:
    """A path as users should see it: relative to the project when inside it (no server layout on show)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_engine(weights: str | None, index_dir: str | Path = DEFAULT_INDEX_DIR, device: str = "cpu") -> LoadedEngine:
    """Open the index with the requested weights; if they cannot be loaded (offline Hub, typo, not a checkpoint)
    or do not match the index, fall back to the embedded default and say so. Loads the prebuilt index only:
    nothing in the gallery is re-encoded. Raises if even the default cannot open the index."""
    t0 = time.perf_counter()
    reason = None
    if weights:
        try:
            model = load_model(weights, device=device)
            engine = SearchEngine.load(index_dir, weights=weights, model=model)
            return LoadedEngine(engine, weights, describe_weights(weights), None, time.perf_counter() - t0)
        except WeightsError as exc:
            reason = f"Could not load {weights}: {exc}; using embedded default."
        except IndexMismatchError as exc:
            reason = f"Weights {weights} do not match the index: {exc}; using embedded default."
    engine = SearchEngine.load(index_dir, weights=None, model=load_model(None, device=device))
    return LoadedEngine(engine, weights, describe_weights(None), reason, time.perf_counter() - t0)


def example_paths(folder: str | Path = EXAMPLES_DIR, limit: int = 8) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in EXAMPLE_EXTS][:limit]


def allowed_paths(loaded: LoadedEngine) -> list[str]:
    """Folders the app may serve files from: assets, the index (thumbnails) and the gallery roots."""
    index = loaded.engine.index
    paths = {str(ASSETS_DIR), str(Path(index.path).resolve())}
    paths.update(str(Path(r).resolve()) for r in getattr(index, "roots", []))
    return sorted(paths)


# ------------------------------------------------------------------------------------------------ queries
def decode_query(value: Any, name: str = "query image") -> Image.Image:
    """A query from the UI or API (file path, bytes, PIL, array, or None) -> RGB PIL, or ImageError."""
    if value is None:
        raise ImageError("No query image: upload a photo, take one with the webcam, or paste one.")
    if isinstance(value, dict):  # an ImageEditor value: use what the user cropped
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
        if value is None:
            raise ImageError("No query image in the cropper: load a photo first.")
    return load_image(value, name=name)


def autocrop(img: Image.Image, threshold: float = 28.0, margin: float = 0.04, min_fraction: float = 0.05) -> Image.Image:
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
    """'All', '' or None -> no filter; a known category -> itself; anything else -> ValueError with the list."""
    if category is None or category == "" or category == ALL_CATEGORIES:
        return None
    if category not in categories:
        raise ValueError(f"Unknown category {category!r}; choose {ALL_CATEGORIES!r} or one of: {', '.join(categories)}")
    return category


def parse_k(k: Any) -> int:
    """The number of results: a whole number from 1 to MAX_K (ints, integral floats, digit strings)."""
    try:
        f = float(k) if not isinstance(k, bool) else float("nan")
    except (TypeError, ValueError):
        f = float("nan")
    if not f.is_integer() or not 1 <= f <= MAX_K:
        raise ValueError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")
    return int(f)


# ------------------------------------------------------------------------------------------------ results
@dataclass
class UIResult:
    """What one search shows: the query as searched, the result, and the gallery's items."""

    query: Image.Image
    result: SearchResult
    gallery: list[tuple[str, str]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        t = self.result.timings
        n = len(self.result.matches)
        if n == 0:
            return "No matches (is the category empty?)."
        return (f"{n} matches for a {self.query.width}×{self.query.height} query · "
                f"encode {t.get('encode_ms', 0):.0f} ms, search {t.get('search_ms', 0):.0f} ms, "
                f"re-rank {t.get('rerank_ms', 0):.0f} ms, explain {t.get('explain_ms', 0):.0f} ms")


def caption(m: Match) -> str:
    return f"#{m.rank} · {m.score:.3f} · {m.item_id} · {m.category}"


def run_search(engine: SearchEngine, image: Any, k: Any = DEFAULT_K, category: str | None = None,
               crop: bool = False, explain: bool = True, heatmap_max_side: int = HEATMAP_SIDE) -> UIResult:
    """Decode (ImageError on bad input), optionally auto-crop, search, and list the gallery items."""
    k_int = parse_k(k)
    cat = parse_category(category, engine.categories)
    img = decode_query(image)
    if crop:
        img = autocrop(img)
    res = engine.search(img, k=k_int, category=cat, explain=explain, heatmap_max_side=heatmap_max_side)
    items = [(m.display_path or m.path, caption(m)) for m in res.matches]
    return UIResult(img, res, items)


def _fit(img: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    if max(img.size) <= max_side:
        return img
    img = img.copy()
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img


@functools.lru_cache(maxsize=1)
def _chart_font():
    """Loaded once: loading the font took half of each chart's time."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def bar_chart(values: Sequence[float], names: Sequence[str], global_contribution: float | None = None,
              width: int = 420, row: int = 26) -> Image.Image:
    """Horizontal bars of the per-part contributions (and the global term), drawn with PIL: a matplotlib figure
    per click would cost more than the search itself."""
    from PIL import ImageDraw

    vals, labels = [float(v) for v in values], list(names)
    if global_contribution is not None:
        vals, labels = [float(global_contribution)] + vals, ["global"] + labels
    font = _chart_font()
    left, right, top = 12 + int(max(font.getlength(lab) for lab in labels)), 60, 10  # names fit beside their bars
    img = Image.new("RGB", (width, top * 2 + row * len(vals) + 18), "white")
    d = ImageDraw.Draw(img)
    lo, hi = min(0.0, *vals), max(0.0, *vals)
    span = (hi - lo) or 1.0
    x = lambda v: left + (v - lo) / span * (width - left - right)  # noqa: E731
    for i, (v, lab) in enumerate(zip(vals, labels)):
        y = top + i * row
        color = "#9e9e9e" if lab == "global" else ("#d62728" if v < 0 else "#1f77b4")
        d.rectangle([min(x(0), x(v)), y + 4, max(x(0), x(v)), y + row - 4], fill=color)
        d.text((6, y + 5), lab, fill="black", font=font)
        d.text((max(x(0), x(v)) + 4, y + 5), f"{v:+.3f}", fill="#333333", font=font)
    d.line([x(0), top, x(0), top + row * len(vals)], fill="black", width=1)
    d.text((left, img.height - 20), "contribution to the score", fill="#555555", font=font)
    return img


def outline(img: Image.Image, box: Sequence[float], color: str = "#00c853") -> Image.Image:
    """`img` with the zoom window `box` (fractions of the image) drawn as a rectangle."""
    from PIL import ImageDraw

    img = img.copy()
    w, h = img.size
    width = max(2, round(max(w, h) / 200))
    ImageDraw.Draw(img).rectangle([box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1], outline=color, width=width)
    return img


def match_details(query: Image.Image, match: Match) -> dict[str, Any]:
    """Everything the details panel shows for one match: markdown, the query and the match with their heatmaps
    overlaid (at display size), and the per-part contribution chart."""
    q = _fit(query)
    q_over = overlay(q, match.query_heatmap) if match.query_heatmap is not None else q
    try:
        m_img = _fit(load_image(match.path))
    except ImageError:  # the original is gone: fall back to the thumbnail
        m_img = _fit(load_image(match.display_path))
    m_over = overlay(m_img, match.match_heatmap) if match.match_heatmap is not None else m_img
    zoomed = tuple(match.box) != FULL_BOX
    if zoomed:
        m_over = outline(m_over, match.box)
    names = match.part_names
    chart = bar_chart(match.contributions, names, global_contribution=match.global_contribution)
    top = int(np.argmax(match.contributions)) if match.contributions else None
    meta = ", ".join(f"{k}: {v}" for k, v in match.metadata.items() if v not in ("", None))
    md = (f"### #{match.rank} · {match.item_id}\n"
          f"**Score** {match.score:.4f} (coarse {match.coarse_score:.4f}) · **Category** {match.category or '—'}"
          + (f" · strongest part: {names[top]}" if top is not None else "")
          + (" · matched through a close-up of the outlined region" if zoomed else "")
          + (f"\n\n{meta}" if meta else "")
          + f"\n\n`{shown_path(match.path)}`")
    return {"markdown": md, "query_overlay": q_over, "match_overlay": m_over, "chart": chart}


def api_payload(ui: UIResult, category: str | None, weights_label: str) -> dict[str, Any]:
    """The /search API's JSON: ranked results plus what produced them."""
    return {
        "results": ui.result.to_json(),
        "k": len(ui.result.matches),
        "category": category or ALL_CATEGORIES,
        "query_size": list(ui.result.query_size),
        "timings_ms": {k: round(v, 2) for k, v in ui.result.timings.items()},
        "weights": weights_label,
    }
