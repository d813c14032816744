"""MGA fashion visual search: the Gradio app (UI only; the logic lives in mga/).

    python app.py [--weights HUB_ID[@REV]|DIR] [--index DIR] [--host HOST] [--port PORT]

Environment (as on a Hugging Face Space): MGA_WEIGHTS, MGA_INDEX, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
API: `/search` (gradio_client: `client.predict(handle_file(path), 10, "All", api_name="/search")`) returns
JSON; bad input raises an error whose message says what is wrong (gradio_client.exceptions.AppError).
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if __name__ == "__main__":
    # what visitors send and what the app shows them (Gradio's cache) in a folder of this server's own, removed when
    # it stops however the stop goes (Gradio's own clean-up misses files a visitor's session wrote late)
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="mga-cache-", dir=os.environ.get("GRADIO_TEMP_DIR"))
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import signal  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from gradio.utils import is_in_or_equal  # noqa: E402
from gradio_client.utils import is_http_url_like  # noqa: E402
from fastapi.responses import Response  # noqa: E402

from mga.imageio import ImageError  # noqa: E402
from mga.index import GalleryFileError, IndexFormatError, image_type  # noqa: E402
from ui.inputs import add_corner, crop_to_corners, crop_view  # noqa: E402
from mga import heap  # noqa: E402
from mga.config import MAX_IMAGE_BYTES  # noqa: E402
from mga.explain import WHOLE  # noqa: E402
from ui.results import (  # noqa: E402
    GALLERY_ROUTE,
    api_payload,
    garments_view,
    match_details,
    match_overlay,
    run_search,
    term_choices,
)
from ui.settings import (  # noqa: E402
    ALL_CATEGORIES,
    DEFAULT_K,
    MAX_K,
    SESSION_MINUTES,
    SESSIONS,
    LoadedEngine,
    allowed_paths,
    example_paths,
    load_engine,
    parse_settings,
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


FILE_NOT_SENT = ("query image: send the photo itself with the request (gradio_client: handle_file(path)); the "
                 "app reads no file or address a request names")


class QueryPhoto(gr.Image):
    """gr.Image that hands the uploaded file to ui.inputs undecoded, so that a bad file gets the app's own
    one-line message (gr.Image decodes it first and fails with Gradio's raw error, naming a server path)."""

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # the browser shows it as the usual image input

    # the app's copies of gallery images (ui.files.GalleryFiles), which "more like this" hands the photo box; on the
    # class, as Gradio makes a session's own copy of a component it updates
    app_copies: str | None = None

    def preprocess(self, payload):
        return None if payload is None else payload.path

    def example_payload(self):  # the API page's sample sends a photo of the client's, not one from the web
        return {"path": "photo.jpg", "orig_name": "photo.jpg", "meta": {"_type": "gradio.FileData"}}

    def example_value(self):
        return "photo.jpg"

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        """The one door a photo comes in by: a file in Gradio's upload folder (an upload, an example) or among the
        app's own copies of gallery images (`app_copies`: "more like this"). A server path or an address named in a
        request is refused with the same
        words whether it exists or not, and nothing is read, fetched or copied. (Gradio's own check of this is
        skipped in a mounted app, and its refusal names the server's folder.)"""
        path = str(url_or_file_path or "")
        folders = [f for f in (self.GRADIO_CACHE, self.app_copies) if f]
        if is_http_url_like(path) or not any(is_in_or_equal(path, f) for f in folders):
            raise gr.Error(FILE_NOT_SENT, print_exception=False)
        return await super().async_move_resource_to_block_cache(url_or_file_path)


class WholeNumber(gr.Number):
    """gr.Number that hands the value on as sent, documented as an integer: ui.inputs.parse_k refuses 2.5 or 0 with
    the app's own line (gr.Number would round the one, and log a traceback for the other)."""

    @classmethod
    def get_block_name(cls) -> str:
        return "number"

    def preprocess(self, payload):
        return payload

    def api_info(self) -> dict[str, str]:
        return {"type": "integer"}


@contextmanager
def api_errors():
    """Bad input and bad parameters become the API client's error (gradio_client's AppError) with our message."""
    try:
        yield
    except (ImageError, ValueError) as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


EMPTY_DETAILS = ("Pick a result to see why it matched.", None, None, None, gr.update(choices=[], value=None))
NO_GARMENTS = (gr.update(visible=False), gr.update(choices=[], value=None), None)  # row, choice, view


def garment_outputs(ui) -> tuple:
    """The garment choice: shown when the photo shows two, set to the one the results are of."""
    if ui is None or len(ui.garments) < 2:
        return NO_GARMENTS
    return (gr.update(visible=True), gr.update(choices=[(g.name, g.kind) for g in ui.garments],
                                               value=ui.shown_garment), garments_view(ui))


class Callbacks:
    """What the UI's events run, on one loaded engine. A search's outputs, in order: results, last search,
    selected result, summary, the details (markdown, two overlays, chart, what the overlays show), error line,
    crop view, corners, the garment choice (its row, the choice, the photo with the garments outlined), photo."""

    def __init__(self, loaded: LoadedEngine):
        self.loaded = loaded

    def details(self, ui, i: int, match_side: bool = True) -> tuple:
        """A match opened: its details with the whole score on both photos (without `match_side`, on the query
        only: `match_heat` follows), and the terms the photos can show."""
        match = ui.result.matches[i]
        d = match_details(self.loaded, ui, match, match_side=match_side)
        return (d["markdown"], d["query_overlay"], d["match_overlay"], d["chart"],
                gr.update(choices=term_choices(match), value=WHOLE))

    def match_heat(self, ui, i):
        """The match's side of the open match's heatmap (the whole match, as a search shows it first), right after
        the search showed its query side."""
        if ui is None or i is None:
            return gr.skip()
        return match_overlay(self.loaded, ui, ui.result.matches[i], WHOLE)

    def show_term(self, ui, i, term):
        """The overlays and chart of one term of the open match (the markdown stays)."""
        if ui is None or i is None or term is None:
            return gr.skip(), gr.skip(), gr.skip()
        d = match_details(self.loaded, ui, ui.result.matches[i], term)
        return d["query_overlay"], d["match_overlay"], d["chart"]

    def search_new_photo(self, image, k, category, crop, colour, like):
        """The photo box's photo searched; `like` (the gallery image "more like this" put there) only while the box
        still holds that very photo."""
        if like is not None and not (isinstance(image, str) and self.loaded.files.is_original(like, image)):
            like = None
        return self.search_photo(image, k, category, crop, colour, like)

    def search_photo(self, image, k, category, crop, colour=ALL_CATEGORIES, like=None, garment=None, garments=()):
        """Search, or show what is wrong with the input in one line and clear the previous results; a file that
        is not a usable photo leaves the photo box too (the browser would show it as a broken image)."""
        if image is None:  # the input was cleared, by hand or after a bad file: a message about that file stays
            return [], None, None, "", *EMPTY_DETAILS, gr.skip(), None, [], *NO_GARMENTS, gr.skip()
        try:
            ui = run_search(self.loaded, image, k, category, crop, colour=colour, like=like, garment=garment,
                            garments=garments)
        except (ImageError, ValueError) as exc:
            unusable = None if isinstance(exc, ImageError) else gr.skip()
            return [], None, None, "", *EMPTY_DETAILS, f"⚠️ {exc}", None, [], *NO_GARMENTS, unusable
        shown = (ui.gallery, ui, 0, ui.summary, *self.details(ui, 0, match_side=False)) if ui.result.matches else \
            ([], ui, None, ui.summary, *EMPTY_DETAILS)
        return *shown, "", crop_view(ui.query, []), [], *garment_outputs(ui), gr.skip()

    def refine(self, image, last, k, category, crop, colour):
        """A setting changed (category, colour, number of products): search again what was searched last (a crop
        of the photo stays cropped, a garment searched alone stays so), or the photo when nothing was searched
        yet."""
        if last is None:
            return self.search_photo(image, k, category, crop, colour)
        if last.garment:
            return self.pick_garment(last, last.garment, k, category, colour)
        # the photo box stays; a "more like this" search stays one
        return *self.search_photo(last.photo, k, category, False, colour, last.like)[:-1], gr.skip()

    def pick_garment(self, last, kind, k, category, colour):
        """One garment of the photo searched alone (its region, among the shop's categories of its kind), or the
        whole photo again for the garment its search found."""
        if last is None or kind is None:
            return (gr.skip(),) * 16
        return *self.search_photo(last.whole, k, category, False, colour, garment=kind,
                                  garments=last.garments)[:-1], gr.skip()

    def pick_corner(self, ui, points, evt: gr.SelectData):
        if ui is None:
            return None, []
        points = add_corner(points, evt.index, ui.query)
        return crop_view(ui.query, points), points

    def search_cropped(self, ui, points, k, category, colour):
        try:
            part = crop_to_corners(ui.query, points) if ui is not None else None
        except ImageError as exc:
            return gr.skip(), *(gr.skip(),) * 8, f"⚠️ {exc}", *(gr.skip(),) * 6
        return *self.search_photo(part, k, category, False, colour)[:-1], gr.skip()  # the photo itself stays

    def select(self, ui, evt: gr.SelectData):
        if ui is None or not isinstance(evt.index, int) or evt.index >= len(ui.result.matches):
            return None, *EMPTY_DETAILS
        return evt.index, *self.details(ui, evt.index)

    def more_like_this(self, ui, i):
        """The picked product's photo (the app's copy of it, which the photo box takes: QueryPhoto) as the new
        query, and which gallery image it is: its search lists the other products."""
        if ui is None or i is None:
            raise gr.Error("Pick a result first.")
        image = ui.result.matches[i].index
        return self.loaded.files.original(image), image

    def api_search(self, image, k, category, colour=ALL_CATEGORIES):
        """Search the shop with one photo of a garment.

        Args:
            image: the photo (JPEG, PNG, WebP, ...; at least 16 px a side, at most 60 MP)
            k: how many products to return, a whole number from 1 to 50
            category: "All", or one of the shop's categories, to search only that category
            colour: "All", or one of the shop's colours, to list only products that come in it (each shown in it)
        """
        with api_errors():
            # JSON has no heatmaps
            ui = run_search(self.loaded, image, k, category, crop=False, explain=False, colour=colour)
            return api_payload(ui, self.loaded.weights_label)


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
    match_heat = dict(fn=cb.match_heat, inputs=[c.last, c.selected], outputs=c.m_heat, **private)
    gr.on([c.query.change, c.search_btn.click], cb.search_new_photo,
          [c.query, c.k, c.category, c.crop, c.colour, c.like], out,
          trigger_mode="always_last", **progress, **private).then(
        None, c.error, js=SHOW_RESULTS, **private).then(**match_heat)
    gr.on([c.category.input, c.colour.input, c.k.release], cb.refine,
          [c.query, c.last, c.k, c.category, c.crop, c.colour], out, trigger_mode="always_last", **progress,
          **private).then(None, c.error, js=SHOW_RESULTS, **private).then(**match_heat)
    c.garment.input(cb.pick_garment, [c.last, c.garment, c.k, c.category, c.colour], out, **progress,
                    **private).then(None, c.error, js=SHOW_RESULTS, **private).then(**match_heat)
    c.cropper.select(cb.pick_corner, [c.last, c.corners], [c.cropper, c.corners], **private)
    c.crop_btn.click(cb.search_cropped, [c.last, c.corners, c.k, c.category, c.colour], out, **progress,
                     **private).then(
        None, c.error, js=SHOW_RESULTS, **private).then(**match_heat)
    c.gallery.select(cb.select, c.last, [c.selected, c.detail_md, c.q_heat, c.m_heat, c.chart, c.term], **private)
    c.term.input(cb.show_term, [c.last, c.selected, c.term], [c.q_heat, c.m_heat, c.chart], **private)
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


def main(argv: list[str] | None = None) -> None:
    # a Space is stopped by SIGTERM (uvicorn, once running, shuts down gracefully and hands it on): a normal exit,
    # at any stage, lets the app's temporary copies (ui.files) go with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    heap.serve()  # before any worker thread: memory a search frees goes back to the system
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
    # the upload cap is the decoder's own, so that a big file gets the app's message (or is searched), not a pop-up
    app = gr.mount_gradio_app(app, demo, path="/", allowed_paths=allowed_paths(), max_file_size=MAX_IMAGE_BYTES,
                              show_error=True, ssr_mode=False, theme=gr.themes.Soft(), css=CSS,
                              footer_links=["api", "settings"])
    print(f"Running on http://{settings.host}:{settings.port}", flush=True)
    # a stop (Ctrl-C, a Space restart) waits at most 5 s for open connections (browsers keep event streams open)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
