"""What one search shows and a session keeps of it (UIResult): the query as a JPEG, the result, the gallery's
items, and the summary line over them."""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mga import CONFIDENT, KIND_NAMES, Garment, SearchResult, likely, load_image, shrink

from .cards import product_name

# A session keeps its query photo as a JPEG of this quality (a tenth of the decoded pixels' memory): every visitor's
# last search stays in the server's memory until the session expires (ui.settings.SESSION_MINUTES).
KEPT_QUALITY = 92


class _LastQuery:
    """The last search and its query as decoded: the views it shows (the details, the crop view, the garments)
    are resized from it instead of decoding its JPEG, and that JPEG is encoded only when first read (the step after
    the results) or when the next search takes the slot. One slot for the process, so memory holds one decoded
    photo whatever the number of sessions; another search taking it costs a decode, nothing else."""

    slot: tuple["UIResult", Image.Image] | None = None
    lock = threading.Lock()

    @classmethod
    def keep(cls, ui: "UIResult", image: Image.Image) -> None:
        with cls.lock:
            previous, cls.slot = cls.slot, (ui, image)
        if previous is not None:
            previous[0].photo  # its JPEG now if not yet: no session but the last keeps decoded pixels

    @classmethod
    def decoded(cls, photo: bytes) -> Image.Image | None:
        slot = cls.slot
        return slot[1] if slot is not None and slot[0].kept is photo else None


def resized_view(decoded: Image.Image, max_side: int) -> Image.Image:
    """A decoded photo within max_side, its full size in `.info["original_size"]`; a new image."""
    view = shrink(decoded, max_side)
    view = view.copy() if view is decoded else view
    view.info["original_size"] = decoded.size
    return view


def photo_view(photo: bytes, max_side: int) -> Image.Image:
    """A kept photo (a JPEG) to show, within max_side, its full size in `.info["original_size"]`: resized from the
    decoded query while it is the last searched, else the JPEG decoded at a reduced scale (much cheaper than in
    full for a large photo). A new image: the caller may draw on it."""
    decoded = _LastQuery.decoded(photo)
    return load_image(photo, max_side=max_side) if decoded is None else resized_view(decoded, max_side)


@dataclass
class UIResult:
    """What one search shows and what a session keeps of it: the query as searched (compressed), the result, and
    the gallery's items."""

    kept: bytes | Image.Image  # the query as searched: its JPEG (`photo`), or the photo itself until that is made
    result: SearchResult
    gallery: list[tuple[str, str]] = field(default_factory=list)
    category: str | None = None  # the category searched, in the shop's spelling (None: all)
    colour: str | None = None  # the colour the products were narrowed to, in the shop's spelling (None: all)
    autocropped: bool | None = None  # auto-crop asked for: whether it trimmed anything (None: not asked)
    like: int | None = None  # "more like this": the gallery image searched, its product left out of the results
    like_name: str = ""
    garments: list[Garment] = field(default_factory=list)  # the garments of the photo (`whole`), found first
    garment: str | None = None  # the kind of garment searched alone, on its region of `whole` (None: all of it)
    source: bytes | None = None  # with `garment`: the whole photo's JPEG (else it is `photo`)

    @classmethod
    def of(cls, query: Image.Image, result: SearchResult, gallery: list[tuple[str, str]],
           category: str | None = None, photo: bytes | None = None, **fields: Any) -> "UIResult":
        """`photo`: the query's JPEG when it was decoded from one kept before (a search refined), kept as it is."""
        ui = cls(photo or query, result, gallery, category, **fields)
        if photo is None or query.info.get("original_size", query.size) == query.size:  # not a kept photo reduced
            _LastQuery.keep(ui, query)
        return ui

    @property
    def photo(self) -> bytes:
        """The query as searched, as a JPEG (KEPT_QUALITY), encoded the first time it is read."""
        kept = self.kept
        if isinstance(kept, Image.Image):
            self.kept = kept = jpeg(kept)  # two threads at once each encode the same bytes
        return kept

    @property
    def whole(self) -> bytes:
        """The photo the garments are regions of: the one searched, or the one a garment was cut from."""
        return self.source or self.photo

    @property
    def shown_garment(self) -> str | None:
        """The garment the results are of: the one searched alone, else the one the whole photo's search found."""
        return self.garment or next((g.kind for g in self.garments if g.found), None)

    @property
    def query(self) -> Image.Image:
        """The query photo, decoded anew from its JPEG (the photo itself while that is not made)."""
        kept = self.kept
        return kept if isinstance(kept, Image.Image) else Image.open(io.BytesIO(kept)).convert("RGB")

    def view(self, max_side: int) -> Image.Image:
        """The query photo to show, within max_side (`photo_view`)."""
        kept = self.kept
        return resized_view(kept, max_side) if isinstance(kept, Image.Image) else photo_view(kept, max_side)

    @property
    def confident(self) -> bool:
        """Whether the best product is likely the query's."""
        return bool(self.result.matches) and likely(self.result.matches[0].confidence)

    @property
    def summary(self) -> str:
        t = self.result.timings
        n = len(self.result.matches)
        if n == 0:
            return "No matches (is the category empty?)."
        w, h = self.result.query_size
        cropped = {None: "", True: " (auto-cropped)", False: " (auto-crop found no plain background to trim)"}
        if self.garment:
            cropped[None] = f" (the {KIND_NAMES[self.garment].lower()} of your photo)"
        timing = (f"{n} products for a {w}×{h} photo{cropped[self.autocropped]} · search "
                  f"{t.get('total_ms', 0):.0f} ms (encode {t.get('encode_ms', 0):.0f}, re-rank "
                  f"{t.get('rerank_ms', 0):.0f})")
        if self.like is not None:  # not the same product by design: "no confident match" would mislead
            return f"**More like {self.like_name}**: the shop's closest other products.\n\n{timing}"
        matches = self.result.matches
        first, second = matches[0], matches[1] if n > 1 else None
        if (first.close_to_next and second is not None and first.confidence is not None
                and first.confidence + second.confidence >= CONFIDENT):
            # two products share the belief: name both rather than call either likely
            return (f"**{product_name(first)} or {product_name(second)}?** They look about as likely "
                    f"({first.confidence:.0%} and {second.confidence:.0%}); compare them below.\n\n{timing}")
        if not self.confident:
            return ("**No confident match**: this shop may not sell this product (or the photo shows too little of "
                    f"it). The closest products are below.\n\n{timing}")
        return timing


def jpeg(image: Image.Image) -> bytes:
    """What a session keeps of a photo (KEPT_QUALITY)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=KEPT_QUALITY)
    return buf.getvalue()
