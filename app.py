"""MGA fashion visual search: the Gradio app (UI only; the logic lives in mga/).

    python app.py [--weights HUB_ID[@REV]|DIR] [--index DIR] [--host HOST] [--port PORT]

Environment (as on a Hugging Face Space): MGA_WEIGHTS, MGA_INDEX, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
API: `/search` (gradio_client: `client.predict(handle_file(path), 10, "All", api_name="/search")`) returns
JSON; bad input raises an error whose message says what is wrong (gradio_client.exceptions.AppError).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from fastapi.responses import FileResponse  # noqa: E402

from mga.imageio import ImageError  # noqa: E402
from mga.index import IndexFormatError  # noqa: E402
from ui.inputs import add_corner, crop_to_corners, crop_view  # noqa: E402
from ui.results import GALLERY_ROUTE, api_payload, match_details, run_search  # noqa: E402
from ui.settings import (  # noqa: E402
    ALL_CATEGORIES,
    DEFAULT_K,
    MAX_K,
    LoadedEngine,
    allowed_paths,
    example_paths,
    load_engine,
    parse_settings,
)

TITLE = "MGA · fashion visual search"
INTRO = (
    "Upload, snap or paste a photo of a garment and find the same item in the shop gallery. "
    "Results are ranked coarse-to-fine (global + part tokens, then Attention-based Token Alignment); "
    "pick a result to see **which parts matched**: the heatmaps show where the part tokens that drove "
    "the score look, on your photo and on the match."
)
CSS = """
#mga-status {font-size: 0.85em; opacity: 0.85}
#mga-error {color: var(--error-text-color, #b91c1c)}
#mga-results .caption-label {font-size: 0.75em}
/* results wrap to the screen: as many columns as fit, never a sideways scroll */
#mga-results .grid-container {grid-template-columns: repeat(auto-fill, minmax(min(150px, 45%), 1fr)) !important;
                              grid-template-rows: none !important}
"""
# After a search on a narrow screen (a phone), bring the results into view: they sit below the photo and examples.
SHOW_RESULTS = """() => { if (window.innerWidth < 900) {
  document.getElementById('mga-results')?.scrollIntoView({behavior: 'smooth', block: 'start'}); } }"""


class QueryPhoto(gr.Image):
    """gr.Image that hands the uploaded file to ui.inputs undecoded, so that a bad file gets the app's own
    one-line message (gr.Image decodes it first and fails with Gradio's raw error, naming a server path)."""

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # the browser shows it as the usual image input

    def preprocess(self, payload):
        return None if payload is None else payload.path


@contextmanager
def api_errors():
    """Bad input and bad parameters become the API client's error (gradio_client's AppError) with our message."""
    try:
        yield
    except (ImageError, ValueError) as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def build_demo(loaded: LoadedEngine, examples: list[str] | None = None) -> gr.Blocks:
    examples = example_paths() if examples is None else examples
    categories = [ALL_CATEGORIES] + list(loaded.engine.categories)

    empty_details = ("Pick a result to see why it matched.", None, None, None)

    def details(ui, i):
        d = match_details(ui.query, ui.result.matches[i])
        return d["markdown"], d["query_overlay"], d["match_overlay"], d["chart"]

    def search_ui(image, k, category, crop):
        """Search, or show what is wrong with the input in one line and clear the previous results."""
        if image is None:  # the input was cleared
            return [], None, None, "", *empty_details, "", None, []
        try:
            ui = run_search(loaded, image, k, category, crop)
        except (ImageError, ValueError) as exc:
            return [], None, None, "", *empty_details, f"⚠️ {exc}", None, []
        shown = (ui.gallery, ui, 0, ui.summary, *details(ui, 0)) if ui.result.matches else \
            ([], ui, None, ui.summary, *empty_details)
        return *shown, "", crop_view(ui.query, []), []

    def pick_corner(ui, points, evt: gr.SelectData):
        if ui is None:
            return None, []
        points = add_corner(points, evt.index, ui.query)
        return crop_view(ui.query, points), points

    def search_cropped(ui, points, k, category):
        try:
            part = crop_to_corners(ui.query, points) if ui is not None else None
        except ImageError as exc:
            return gr.skip(), *(gr.skip(),) * 7, f"⚠️ {exc}", gr.skip(), gr.skip()
        return search_ui(part, k, category, False)

    def select(ui, evt: gr.SelectData):
        if ui is None or not isinstance(evt.index, int) or evt.index >= len(ui.result.matches):
            return None, *empty_details
        return evt.index, *details(ui, evt.index)

    def more_like_this(ui, i):
        if ui is None or i is None:
            raise gr.Error("Pick a result first.")
        return loaded.files.original(ui.result.matches[i].index)

    def api_search(image, k, category):
        """Search the shop with one photo of a garment.

        Args:
            image: the photo (JPEG, PNG, WebP, ...; at least 16 px a side, at most 60 MP)
            k: how many products to return, a whole number from 1 to 50
            category: "All", or one of the shop's categories, to search only that category
        """
        with api_errors():
            ui = run_search(loaded, image, k, category, crop=False, explain=False)  # JSON has no heatmaps
            return api_payload(ui, category, loaded.weights_label)

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        # uploads and the copies Gradio serves are deleted an hour after they were made (checked every 10 minutes)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        gr.Markdown(loaded.status_markdown, elem_id="mga-status")
        last = gr.State(None)  # the last search (UIResult)
        selected = gr.State(None)  # index of the selected match
        corners = gr.State([])  # corners clicked on the photo to crop by hand
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                query = QueryPhoto(label="Your photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                   height=340, elem_id="mga-query")
                error = gr.Markdown(elem_id="mga-error")
                crop = gr.Checkbox(label="Auto-crop to the garment (trim a plain background)", value=False)
                with gr.Row():
                    k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Results")
                    category = gr.Dropdown(categories, value=ALL_CATEGORIES, label="Category")
                search_btn = gr.Button("Search", variant="primary", elem_id="mga-search")
                with gr.Accordion("Crop by hand", open=False):
                    cropper = gr.Image(label="Click two opposite corners of the garment", type="pil",
                                       interactive=False, height=340, elem_id="mga-cropper")
                    crop_btn = gr.Button("Search the cropped photo", elem_id="mga-search-cropped")
                if examples:
                    gr.Examples(examples, inputs=query, label="Example queries", cache_examples=False,
                                examples_per_page=12)
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Matching products", columns=5, height="auto", allow_preview=True,
                                     object_fit="contain", interactive=False, elem_id="mga-results")
                summary = gr.Markdown(elem_id="mga-summary")
                detail_md = gr.Markdown(empty_details[0], elem_id="mga-detail")
                with gr.Row(equal_height=True):
                    q_heat = gr.Image(label="Your photo", type="pil", interactive=False,
                                      height=300, elem_id="mga-query-heatmap")
                    m_heat = gr.Image(label="The match", type="pil", interactive=False,
                                      height=300, elem_id="mga-match-heatmap")
                    chart = gr.Image(label="Part contributions", type="pil", interactive=False,
                                     height=300, elem_id="mga-contributions")
                more_btn = gr.Button("More like this", elem_id="mga-more")

        # The API: one plain-JSON endpoint (the UI's events below are private).
        with gr.Column(visible=False):
            api_image = QueryPhoto(label="image", type="filepath")
            api_k = gr.Number(value=DEFAULT_K, label="k", minimum=1, maximum=MAX_K)  # not rounded: parse_k checks
            api_category = gr.Dropdown(categories, value=ALL_CATEGORIES, label="category", allow_custom_value=True)
            api_out = gr.JSON(label="results")
            api_btn = gr.Button("search")

        ui_out = [gallery, last, selected, summary, detail_md, q_heat, m_heat, chart, error, cropper, corners]
        detail_out = [selected, detail_md, q_heat, m_heat, chart]
        private = dict(api_visibility="private")
        gr.on([query.change, search_btn.click, category.input, k.release], search_ui,
              [query, k, category, crop], ui_out, trigger_mode="always_last", **private).then(
            None, js=SHOW_RESULTS, **private)
        cropper.select(pick_corner, [last, corners], [cropper, corners], **private)
        crop_btn.click(search_cropped, [last, corners, k, category], ui_out, **private).then(
            None, js=SHOW_RESULTS, **private)
        gallery.select(select, last, detail_out, **private)
        more_btn.click(more_like_this, [last, selected], query, **private)
        api_btn.click(api_search, [api_image, api_k, api_category], api_out, api_name="search",
                      api_description="Search the shop with one photo: returns {results: [{rank, product_name, "
                                      "color, category, confidence, url, image, parts, ...}], confident, "
                                      "timings_ms, weights}.")
    return demo


def serve_gallery(app: FastAPI, loaded: LoadedEngine) -> None:
    """GET /gallery/<i>/<name>: gallery image i as results show it, for API clients (`url` in the JSON)."""

    @app.get(f"/{GALLERY_ROUTE}/{{i}}/{{name}}")
    def gallery_image(i: int, name: str):
        index = loaded.engine.index
        if not 0 <= i < len(index) or name != Path(index.relative_path(i)).name:
            raise HTTPException(404, "no such gallery image")
        return FileResponse(loaded.files.display(i))


def main(argv: list[str] | None = None) -> None:
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
    demo = build_demo(loaded)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue)
    app = FastAPI()
    serve_gallery(app, loaded)
    app = gr.mount_gradio_app(app, demo, path="/", allowed_paths=allowed_paths(), max_file_size="30mb",
                              show_error=True, ssr_mode=False, theme=gr.themes.Soft(), css=CSS,
                              footer_links=["api", "settings"])
    print(f"Running on http://{settings.host}:{settings.port}", flush=True)
    # a stop (Ctrl-C, a Space restart) waits at most 5 s for open connections (browsers keep event streams open)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
