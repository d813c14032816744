"""The app's own Gradio components: the one door a photo comes in by (QueryPhoto) and the API's whole number of
products (WholeNumber), each handing its value on as sent so that ui.inputs answers bad input with the app's own
line."""
from __future__ import annotations

import gradio as gr
from gradio.utils import is_in_or_equal
from gradio_client.utils import is_http_url_like

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
