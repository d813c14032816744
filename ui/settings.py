"""The app's settings (command line, then environment, as a Space sets it) and its start-up with a visible fallback."""
from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from mga import (
    ASSETS_DIR,
    DEFAULT_INDEX_DIR,
    IndexMismatchError,
    SearchEngine,
    WeightsError,
    describe_weights,
    load_model,
)

from .files import GalleryFiles

ALL_CATEGORIES = "All"
MAX_K = 50
DEFAULT_K = 10
EXAMPLES_DIR = ASSETS_DIR / "examples"
EXAMPLE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
# What the server keeps of its visitors: each session's last search (a compressed photo and its results) lives
# SESSION_MINUTES after its last use, and only the SESSIONS most recently active sessions keep theirs (Gradio's own
# default, 10,000 sessions without end, lets a public Space run out of memory one visitor at a time).
SESSION_MINUTES = 30
SESSIONS = 100


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class AppSettings:
    weights: str | None  # Hub id `org/name[@rev]`, a checkpoint folder, or None (embedded default)
    index: str
    host: str
    port: int
    device: str = "cpu"
    concurrency: int = 8
    queue: int = 64


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
    p.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT") or 7860),
                   help="port (env GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--device", default=env.get("MGA_DEVICE") or "cpu", help="torch device (env MGA_DEVICE)")
    p.add_argument("--concurrency", type=int, default=int(env.get("MGA_CONCURRENCY") or 8),
                   help="searches run at once; the rest wait in the queue (env MGA_CONCURRENCY; default 8)")
    p.add_argument("--queue", type=int, default=int(env.get("MGA_QUEUE") or 64),
                   help="searches that may wait; beyond them a visitor is told the app is busy (env MGA_QUEUE; "
                        "default 64)")
    a = p.parse_args(argv)
    return AppSettings(a.weights, a.index, a.host, a.port, a.device, max(1, a.concurrency), max(1, a.queue))


# ------------------------------------------------------------------------------------------------ start-up
@dataclass
class LoadedEngine:
    engine: SearchEngine
    requested_weights: str | None
    weights_label: str  # what actually got loaded, as users may see it
    fallback_reason: str | None = None  # why the requested weights are not in use (for the server's log)
    load_seconds: float = 0.0
    files: GalleryFiles = field(init=False)  # the gallery images this app has shown, as the browser gets them

    def __post_init__(self):
        self.files = GalleryFiles(self.engine.index)
        # the gallery photos' colours, read in the background: a visitor's first searches would read them. Not a
        # daemon (one killed inside a decoder at exit aborts the process); it stops once the main thread has ended.
        ended = lambda: not threading.main_thread().is_alive()  # noqa: E731
        threading.Thread(target=self.engine.colours.warm, args=(ended,), name="gallery-colours").start()

    @property
    def status_markdown(self) -> str:
        """The status line: what is loaded, in names a visitor may see (no folder of the server)."""
        info = self.engine.info
        return (f"**Weights:** {self.weights_label} (fingerprint `{info.get('fingerprint', '?')}`) · "
                f"**Index:** `{Path(info.get('index', '?')).name}` — {info.get('images', '?')} images, "
                f"{info.get('items', '?')} items, {len(self.engine.categories)} categories")

    @property
    def warning_markdown(self) -> str:
        """What a visitor must know about the set-up ("" when nothing): requested weights not in use."""
        if not self.fallback_reason:
            return ""
        return (f"⚠️ Could not use the requested weights {public_name(self.requested_weights)}; using the "
                "embedded default (the server's log says why).")


def public_name(weights: str | None) -> str:
    """Weights as a visitor may see them: a Hub id as it is, a local checkpoint by its folder's name only."""
    if weights is None:
        return describe_weights(None)
    return Path(weights).name if Path(weights).exists() or weights.startswith(("/", ".")) else weights


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
            return LoadedEngine(engine, weights, public_name(weights), None, time.perf_counter() - t0)
        except WeightsError as exc:
            reason = f"Could not load {weights}: {exc}; using embedded default."
        except IndexMismatchError as exc:
            reason = f"Weights {weights} do not match the index: {exc}; using embedded default."
    engine = SearchEngine.load(index_dir, weights=None, model=load_model(None, device=device))
    return LoadedEngine(engine, weights, public_name(None), reason, time.perf_counter() - t0)


def example_paths(folder: str | Path = EXAMPLES_DIR, limit: int = 12) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in EXAMPLE_EXTS][:limit]


def allowed_paths() -> list[str]:
    """What Gradio may serve straight from disk: the example photos, nothing else. Gallery images reach the
    browser as copies (ui.files.GalleryFiles); the index, the weights and the gallery's folders are never served."""
    return [str(EXAMPLES_DIR)]
