"""What the UI's events run (Callbacks), on one loaded engine: a search's outputs for every component it updates,
the details of an opened result, and the API's JSON with its errors as the client's."""
from __future__ import annotations

from contextlib import contextmanager

import gradio as gr

from mga import WHOLE, ImageError

from .chart import term_choices
from .details import garments_view, match_images, match_markdown
from .inputs import CROP_VIEW_SIDE, add_corner, crop_to_corners, crop_view
from .results import api_payload, run_search
from .settings import ALL_CATEGORIES, LoadedEngine


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
    """The garment choice: shown when the photo shows two, set to the one the results are of; the photo with
    the garments outlined comes right after (Callbacks.after_search)."""
    if ui is None or len(ui.garments) < 2:
        return NO_GARMENTS
    return (gr.update(visible=True), gr.update(choices=[(g.name, g.kind) for g in ui.garments],
                                               value=ui.shown_garment), gr.skip())


class Callbacks:
    """What the UI's events run, on one loaded engine. A search's outputs, in order: results, last search,
    selected result, summary, the details (markdown, two overlays and the chart, cleared until `after_search`
    brings them, what the overlays show), error line, crop view and the photo with the garments outlined (both
    left to `after_search` too, cleared on an error), corners, the garment choice (its row, the choice), photo."""

    def __init__(self, loaded: LoadedEngine):
        self.loaded = loaded

    def details(self, ui, i: int, photos: bool = True) -> tuple:
        """A match opened: its words, the whole score on both photos and the chart (without `photos`, the words
        alone and the photos cleared: `heatmaps` follows with them), and the terms the photos can show."""
        match = ui.result.matches[i]
        images = match_images(self.loaded, ui, match) if photos else (None, None, None)
        return match_markdown(ui, match), *images, gr.update(choices=term_choices(match), value=WHOLE)

    def heatmaps(self, ui, i, term=WHOLE):
        """The overlays and chart of one term of the open match (the words stay): after a search, the whole
        score's, right after its results and words are shown."""
        if ui is None or i is None or term is None:
            return gr.skip(), gr.skip(), gr.skip()
        return match_images(self.loaded, ui, ui.result.matches[i], term)

    def after_search(self, ui, i):
        """What a search shows right after its results and words: the first match's heatmaps and chart
        (`heatmaps`), the photo to crop by hand, and the photo with its garments outlined (None unless it shows
        two); then the session's JPEG of the photo is made."""
        if ui is None:  # nothing searched, or a bad file: the search has cleared what it had to
            return (gr.skip(),) * 5
        shown = *self.heatmaps(ui, i), crop_view(ui.view(CROP_VIEW_SIDE), []), garments_view(ui)
        ui.photo  # the session's JPEG made now, not in the next search (ui.session._LastQuery)
        return shown

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
        shown = (ui.gallery, ui, 0, ui.summary, *self.details(ui, 0, photos=False)) if ui.result.matches else \
            ([], ui, None, ui.summary, *EMPTY_DETAILS)
        return *shown, "", gr.skip(), [], *garment_outputs(ui), gr.skip()

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
        view = ui.view(CROP_VIEW_SIDE)  # decoded once, at the crop view's size
        points = add_corner(points, evt.index, view)
        return crop_view(view, points), points

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
