"""MGA fashion visual search: the Gradio app (UI only: its layout and events; the logic lives in ui/ and mga/).

    python app.py [--weights HUB_ID[@REV]|DIR] [--index DIR] [--host HOST] [--port PORT]

Environment (as on a Hugging Face Space): MGA_WEIGHTS, MGA_INDEX, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
API: `/search` (gradio_client: `client.predict(handle_file(path), 10, "All", api_name="/search")`) returns
JSON; bad input raises an error whose message says what is wrong (gradio_client.exceptions.AppError).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if __name__ == "__main__":
    # what visitors send and what the app shows them (Gradio's cache) in a folder of this server's own, removed when
    # it stops however the stop goes (Gradio's own clean-up misses files a visitor's session wrote late)
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="mga-cache-", dir=os.environ.get("GRADIO_TEMP_DIR"))
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

from types import SimpleNamespace  # noqa: E402

import gradio as gr  # noqa: E402

from ui.callbacks import EMPTY_DETAILS, Callbacks  # noqa: E402
from ui.components import QueryPhoto, WholeNumber  # noqa: E402
from ui.server import serve, start  # noqa: E402
from ui.settings import (  # noqa: E402
    ALL_CATEGORIES,
    DEFAULT_K,
    MAX_K,
    SESSION_MINUTES,
    SESSIONS,
    LoadedEngine,
    example_paths,
)

TITLE = "Find it in the shop"
INTRO = ("Take, upload or paste a photo of a garment, or try an example: the shop's closest products appear beside "
         "it. Open one to see which details matched.")
ABOUT = (
    "Visual search with Multi-Granular Alignment: a photo is encoded as its overall look and a few fine parts "
    "(neckband, cuffs, hem...); the shop's photos are found by the whole, then re-ranked by matching part to part "
    "(Attention-based Token Alignment). The heatmaps spread a match's whole score over both photos; the "
    "probability beside each product is calibrated on photos the app never shows, and the products listed share "
    "one belief. The API: the \"Use via API\" link below.")
CSS = """
#mga-status {font-size: 0.85em; opacity: 0.85}
#mga-error {color: var(--error-text-color, #b91c1c)}
/* each card's caption under its photo, whole, not over the garment; every card shown, no box of its own to scroll */
#mga-results .caption-label {font-size: 0.75em; white-space: normal; line-height: 1.25; position: static !important;
                             max-width: 100% !important; border: none !important; border-radius: 0 !important}
#mga-results .thumbnail-item {aspect-ratio: auto !important; height: auto !important; display: flex;
                              flex-direction: column}
#mga-results .thumbnail-item > img {aspect-ratio: 1; height: auto !important}
#mga-results .fixed-height {max-height: none !important}
#mga-results .grid-wrap {overflow-y: visible !important}
/* results wrap to the screen: as many columns as fit, never a sideways scroll */
#mga-results .grid-container {grid-template-columns: repeat(auto-fill, minmax(min(150px, 45%), 1fr)) !important;
                              grid-template-rows: none !important}
"""
# After a search: close the large view of a product opened before (it would show the last search's product; the
# gallery's selected_index cannot do it, as the server never saw it change); bring the line saying what is wrong
# into view at any width (it sits under the photo, far above the cropper that may have caused it), and on a narrow
# screen (a phone) the results, which sit below the photo, the examples and the settings. It gets the error line's
# value: the page may not show the new text yet when it runs.
SHOW_RESULTS = """(error) => {
  document.querySelector('#mga-results button[aria-label="Close"]')?.click();
  if (error) {
    document.getElementById('mga-error')?.scrollIntoView({behavior: 'smooth', block: 'center'});
  } else if (window.innerWidth < 900) {
    document.getElementById('mga-results')?.scrollIntoView({behavior: 'smooth', block: 'start'}); } }"""


def layout(categories: list[str], colours: list[str], examples: list[str]) -> SimpleNamespace:
    """The page: the photo and its settings on the left, the products and why they matched on the right."""
    kept = dict(time_to_live=SESSION_MINUTES * 60)  # a visitor's results, until they go quiet (ui.settings)
    c = SimpleNamespace(last=gr.State(None, **kept), selected=gr.State(None, **kept), corners=gr.State([], **kept),
                        like=gr.State(None, **kept))
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            c.query = QueryPhoto(label="Your photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 height=300, elem_id="mga-query")
            c.error = gr.Markdown(elem_id="mga-error")  # under the photo: what is wrong with it stays in view
            if examples:
                with gr.Column(elem_id="mga-examples"):
                    gr.Examples(examples, inputs=c.query, label="Try one", cache_examples=False,
                                examples_per_page=12)
            with gr.Row():
                c.category = gr.Dropdown(categories, value=ALL_CATEGORIES, label="Kind of garment")
                c.colour = gr.Dropdown(colours, value=ALL_CATEGORIES, label="Colour", elem_id="mga-colour")
            with gr.Row():
                c.k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Products")
                c.crop = gr.Checkbox(label="Auto-crop (trim a plain background)", value=False)
            c.search_btn = gr.Button("Search", variant="primary", elem_id="mga-search")
            with gr.Accordion("Crop by hand", open=False):
                c.cropper = gr.Image(label="Click two opposite corners of the garment", type="pil",
                                     interactive=False, height=340, elem_id="mga-cropper")
                c.crop_btn = gr.Button("Search the cropped photo", elem_id="mga-search-cropped")
        with gr.Column(scale=3):
            c.summary = gr.Markdown(elem_id="mga-summary")
            with gr.Row(visible=False, elem_id="mga-garments") as c.garment_row:  # a photo of two garments
                c.garment_view = gr.Image(type="pil", interactive=False, show_label=False, height=160,
                                          elem_id="mga-garment-view")
                c.garment = gr.Radio([], label="Which garment?", elem_id="mga-garment")
            # no label over the photos: it would cover the first one
            c.gallery = gr.Gallery(label="Matching products", show_label=False, columns=5, height="auto",
                                   allow_preview=True, object_fit="contain", interactive=False,
                                   elem_id="mga-results")
            c.detail_md = gr.Markdown(EMPTY_DETAILS[0], elem_id="mga-detail")
            with gr.Row(equal_height=True):
                c.q_heat = gr.Image(label="Your photo", type="pil", interactive=False, height=300,
                                    elem_id="mga-query-heatmap")
                c.m_heat = gr.Image(label="The match", type="pil", interactive=False, height=300,
                                    elem_id="mga-match-heatmap")
                c.chart = gr.Image(label="What the score is made of", type="pil", interactive=False, height=300,
                                   elem_id="mga-contributions")
            c.term = gr.Radio([], label="Show on the photos", elem_id="mga-term")
            c.more_btn = gr.Button("More like this", elem_id="mga-more")
    with gr.Column(visible=False):  # the API's one plain-JSON endpoint; its labels are what its docs show
        c.api_image = QueryPhoto(label="a photo of a garment (JPEG, PNG, WebP...; 16 px to 60 MP)", type="filepath")
        c.api_k = WholeNumber(value=DEFAULT_K, label=f"products to return: a whole number from 1 to {MAX_K}")
        c.api_category = gr.Dropdown(categories, value=ALL_CATEGORIES, allow_custom_value=True,
                                     label=f"'{ALL_CATEGORIES}' or one of the shop's categories")
        c.api_colour = gr.Dropdown(colours, value=ALL_CATEGORIES, allow_custom_value=True,
                                   label=f"'{ALL_CATEGORIES}' or one of the shop's colours")
        c.api_out = gr.JSON(label="results")
        c.api_btn = gr.Button("search")
    return c


def wire(c: SimpleNamespace, cb: Callbacks) -> None:
    """The events: the UI's are private; `/search` is the API."""
    out = [c.gallery, c.last, c.selected, c.summary, c.detail_md, c.q_heat, c.m_heat, c.chart, c.term, c.error,
           c.cropper, c.corners, c.garment_row, c.garment, c.garment_view, c.query]
    private = dict(api_visibility="private")
    # no progress over the photo or the error line: the photo box emptied after a bad file searches once more,
    # and its timer must not cover the message that stays
    progress = dict(show_progress_on=[o for o in out if o not in (c.error, c.query, c.garment_row)])
    after = dict(fn=cb.after_search, inputs=[c.last, c.selected],
                    outputs=[c.q_heat, c.m_heat, c.chart, c.cropper, c.garment_view], **private)
    gr.on([c.query.change, c.search_btn.click], cb.search_new_photo,
          [c.query, c.k, c.category, c.crop, c.colour, c.like], out,
          trigger_mode="always_last", **progress, **private).then(
        None, c.error, js=SHOW_RESULTS, **private).then(**after)
    gr.on([c.category.input, c.colour.input, c.k.release], cb.refine,
          [c.query, c.last, c.k, c.category, c.crop, c.colour], out, trigger_mode="always_last", **progress,
          **private).then(None, c.error, js=SHOW_RESULTS, **private).then(**after)
    c.garment.input(cb.pick_garment, [c.last, c.garment, c.k, c.category, c.colour], out, **progress,
                    **private).then(None, c.error, js=SHOW_RESULTS, **private).then(**after)
    c.cropper.select(cb.pick_corner, [c.last, c.corners], [c.cropper, c.corners], **private)
    c.crop_btn.click(cb.search_cropped, [c.last, c.corners, c.k, c.category, c.colour], out, **progress,
                     **private).then(
        None, c.error, js=SHOW_RESULTS, **private).then(**after)
    c.gallery.select(cb.select, c.last, [c.selected, c.detail_md, c.q_heat, c.m_heat, c.chart, c.term], **private)
    c.term.input(cb.heatmaps, [c.last, c.selected, c.term], [c.q_heat, c.m_heat, c.chart], **private)
    c.more_btn.click(cb.more_like_this, [c.last, c.selected], [c.query, c.like], **private)
    c.api_btn.click(cb.api_search, [c.api_image, c.api_k, c.api_category, c.api_colour], c.api_out, api_name="search",
                    api_description="Search the shop with one photo: returns {results: [{rank, product_name, "
                                    "color, category, confidence, url, image, parts, ...}], confident, "
                                    "whole_garment, garments, timings_ms, weights}.")


def build_demo(loaded: LoadedEngine, examples: list[str] | None = None) -> gr.Blocks:
    examples = example_paths() if examples is None else examples
    # uploads and the copies Gradio serves are deleted an hour after they were made (checked every 10 minutes)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        categories = list(loaded.engine.categories)
        gr.Markdown(f"# {TITLE}\n{INTRO} **The shop sells** {', '.join(categories)}: nothing else.",
                    elem_id="mga-intro")
        if loaded.warning_markdown:
            gr.Markdown(loaded.warning_markdown, elem_id="mga-warning")
        QueryPhoto.app_copies = str(loaded.files.folder)
        wire(layout([ALL_CATEGORIES] + categories, [ALL_CATEGORIES] + loaded.engine.colours.names(), examples),
             Callbacks(loaded))
        with gr.Accordion("About", open=False, elem_id="mga-about"):
            gr.Markdown(ABOUT)
            gr.Markdown(loaded.status_markdown, elem_id="mga-status")
    demo.state_session_capacity = SESSIONS  # launch()'s setting; the app is mounted, not launched (main)
    return demo


def main(argv: list[str] | None = None) -> None:
    settings, loaded = start(argv)
    serve(build_demo(loaded), loaded, settings, theme=gr.themes.Soft(), css=CSS, footer_links=["api", "settings"])


if __name__ == "__main__":
    main()
