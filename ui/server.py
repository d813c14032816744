"""The app as a web server: its start-up (settings, the engine, what was loaded said in the log), the gallery's
images for API clients, and the Gradio app mounted on FastAPI and served by uvicorn until it is stopped."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

from mga import MAX_IMAGE_BYTES, GalleryFileError, IndexFormatError, image_type, serve_freed_memory

from .results import GALLERY_ROUTE
from .settings import AppSettings, LoadedEngine, allowed_paths, load_engine, parse_settings


def start(argv: Sequence[str] | None = None) -> tuple[AppSettings, LoadedEngine]:
    """The process made ready to serve and the engine loaded; an index it cannot read stops it (exit status 2)."""
    # a Space is stopped by SIGTERM (uvicorn, once running, shuts down gracefully and hands it on): a normal exit,
    # at any stage, lets the app's temporary copies (ui.files) go with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve_freed_memory()  # before any worker thread: memory a search frees goes back to the system
    settings = parse_settings(argv)
    try:
        loaded = load_engine(settings.weights, settings.index, settings.device)
    except IndexFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if loaded.fallback_reason:
        print(f"WARNING: {loaded.fallback_reason}", flush=True)
    print(f"MGA: {loaded.weights_label}; index {settings.index} ({loaded.engine.info.get('images')} images); "
          f"ready in {loaded.load_seconds:.1f} s", flush=True)
    return settings, loaded


def serve_gallery(app: FastAPI, loaded: LoadedEngine) -> None:
    """GET /gallery/<i>/<name>: gallery image i as results show it, for API clients (`url` in the JSON). Its bytes
    come from GalleryIndex.read_image, which checks the very file it opens on every request (inside the gallery,
    a regular image file, no link out); anything else is a 404 that names nothing of the server."""

    @app.get(f"/{GALLERY_ROUTE}/{{i}}/{{name}}")
    def gallery_image(i: int, name: str):
        index = loaded.engine.index
        if not 0 <= i < len(index) or name != Path(index.relative_path(i)).name:
            raise HTTPException(404, "no such gallery image")
        try:
            data = index.read_image(i, display=True)
        except GalleryFileError as exc:
            print(f"WARNING: not served: {exc}", flush=True)
            raise HTTPException(404, "no such gallery image") from None
        return Response(data, media_type=image_type(data))


def serve(demo: gr.Blocks, loaded: LoadedEngine, settings: AppSettings, **look: Any) -> None:
    """`demo` mounted on FastAPI beside the gallery's images, served until stopped; `look`: how the page looks
    (mount_gradio_app's theme, css, footer_links)."""
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue)
    app = FastAPI()
    serve_gallery(app, loaded)
    # the upload cap is the decoder's own, so that a big file gets the app's message (or is searched), not a pop-up
    app = gr.mount_gradio_app(app, demo, path="/", allowed_paths=allowed_paths(), max_file_size=MAX_IMAGE_BYTES,
                              show_error=True, ssr_mode=False, **look)
    print(f"Running on http://{settings.host}:{settings.port}", flush=True)
    # a stop (Ctrl-C, a Space restart) waits at most 5 s for open connections (browsers keep event streams open)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)
