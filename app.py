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

import gradio as gr  # noqa: E402

from mga.imageio import ImageError  # noqa: E402
from mga.index import IndexFormatError  # noqa: E402
from ui.results import api_payload, match_details, run_search  # noqa: E402
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
#mga-results .caption-label {font-size: 0.75em}
"""


@contextmanager
def user_errors():
    """Bad input and bad parameters become a message for the user (UI toast, or the API client's error)."""
    try:
        yield
    except (ImageError, ValueError) as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def build_demo(loaded: LoadedEngine, examples: list[str] | None = None) -> gr.Blocks:
    engine = loaded.engine
    examples = example_paths() if examples is None else examples
    categories = [ALL_CATEGORIES] + list(engine.categories)

    empty_details = ("Pick a result to see why it matched.", None, None, None)

    def details(ui, i):
        d = match_details(ui.query, ui.result.matches[i])
        return d["markdown"], d["query_overlay"], d["match_overlay"], d["chart"]

    def search_ui(image, k, category, crop):
        if image is None:  # the input was cleared
            return [], None, None, "", *empty_details
        with user_errors():
            ui = run_search(loaded, image, k, category, crop)
        if not ui.result.matches:
            return [], ui, None, ui.summary, *empty_details
        return ui.gallery, ui, 0, ui.summary, *details(ui, 0)

    def select(ui, evt: gr.SelectData):
        if ui is None or not isinstance(evt.index, int) or evt.index >= len(ui.result.matches):
            return None, *empty_details
        return evt.index, *details(ui, evt.index)

    def more_like_this(ui, i):
        if ui is None or i is None:
            raise gr.Error("Pick a result first.")
        return loaded.files.original(ui.result.matches[i].index)

    def api_search(image, k, category):
        with user_errors():
            ui = run_search(loaded, image, k, category, crop=False, explain=False)  # JSON has no heatmaps
            return api_payload(ui, category, loaded.weights_label)

    # uploads and the copies Gradio serves are deleted an hour after they were made (checked every 10 minutes)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        gr.Markdown(loaded.status_markdown, elem_id="mga-status")
        last = gr.State(None)  # the last search (UIResult)
        selected = gr.State(None)  # index of the selected match
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                query = gr.Image(label="Your photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 image_mode=None, height=340, elem_id="mga-query")
                crop = gr.Checkbox(label="Auto-crop to the garment (trim a plain background)", value=False)
                with gr.Row():
                    k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Results")
                    category = gr.Dropdown(categories, value=ALL_CATEGORIES, label="Category")
                search_btn = gr.Button("Search", variant="primary", elem_id="mga-search")
                with gr.Accordion("Crop by hand", open=False):
                    cropper = gr.ImageEditor(label="Drag the crop tool around the garment", type="pil",
                                             image_mode="RGB", sources=[], transforms=["crop"], brush=False,
                                             eraser=False, layers=False, height=340, elem_id="mga-cropper")
                    crop_btn = gr.Button("Search the cropped photo", elem_id="mga-search-cropped")
                if examples:
                    gr.Examples(examples, inputs=query, label="Example queries", cache_examples=False,
                                examples_per_page=8)
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Ranked matches", columns=5, height="auto", allow_preview=False,
                                     object_fit="contain", interactive=False, elem_id="mga-results")
                summary = gr.Markdown(elem_id="mga-summary")
                detail_md = gr.Markdown(empty_details[0], elem_id="mga-detail")
                with gr.Row(equal_height=True):
                    q_heat = gr.Image(label="Your photo", type="pil", interactive=False,
                                      height=260, elem_id="mga-query-heatmap")
                    m_heat = gr.Image(label="The match", type="pil", interactive=False,
                                      height=260, elem_id="mga-match-heatmap")
                    chart = gr.Image(label="Part contributions", type="pil", interactive=False,
                                     height=260, elem_id="mga-contributions")
                more_btn = gr.Button("More like this", elem_id="mga-more")

        # The API: one plain-JSON endpoint (the UI's events below are private).
        with gr.Column(visible=False):
            api_image = gr.File(label="image", type="filepath")
            # no rounding here: parse_k refuses 2.5 or true instead of searching with what Gradio made of them
            api_k = gr.Number(value=DEFAULT_K, label="k", minimum=1, maximum=MAX_K)
            api_category = gr.Dropdown(categories, value=ALL_CATEGORIES, label="category", allow_custom_value=True)
            api_out = gr.JSON(label="results")
            api_btn = gr.Button("search")

        ui_out = [gallery, last, selected, summary, detail_md, q_heat, m_heat, chart]
        detail_out = [selected, detail_md, q_heat, m_heat, chart]
        private = dict(api_visibility="private")
        gr.on([query.change, search_btn.click, category.input, k.release], search_ui,
              [query, k, category, crop], ui_out, trigger_mode="always_last", **private)
        crop_btn.click(search_ui, [cropper, k, category, gr.State(False)], ui_out, **private)
        query.change(lambda p: p, query, cropper, queue=False, **private)
        gallery.select(select, last, detail_out, **private)
        more_btn.click(more_like_this, [last, selected], query, **private)
        api_btn.click(api_search, [api_image, api_k, api_category], api_out, api_name="search",
                      api_description="Search the gallery with one image: returns {results: [{rank, score, "
                                      "item_id, category, image, contributions, ...}], timings_ms, weights}.")
    return demo


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
    demo.launch(server_name=settings.host, server_port=settings.port, allowed_paths=allowed_paths(),
                max_file_size="30mb", show_error=True, ssr_mode=False, theme=gr.themes.Soft(), css=CSS,
                footer_links=["api", "settings"])


if __name__ == "__main__":
    main()
