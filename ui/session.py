"""What one search shows and a session keeps of it (UIResult): the query as a JPEG, the result, the gallery's
items, and the summary line over them."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mga import CONFIDENT, KIND_NAMES, Garment, SearchResult, likely, load_image, shrink

from .cards import product_name

# A session keeps its query photo as a JPEG of this quality (a tenth of the decoded pixels' memory): every visitor's
# last search stays in the server's memory until the session expires (ui.settings.SESSION_MINUTES).
KEPT_QUALITY = 92


class _LastQuery:
    """The last search's query as decoded, beside its kept JPEG: the views that search's callback shows (the
    details, the crop view, the garments) are resized from it instead of decoding the JPEG again. One slot for the
    process, so memory holds one photo whatever the number of sessions; another search taking it costs a decode,
    nothing else."""

    slot: tuple[bytes, Image.Image] | None = None

    @classmethod
    def keep(cls, photo: bytes, image: Image.Image) -> None:
        cls.slot = (photo, image)  # one assignment: a search in another thread sees the old pair or the new

    @classmethod
    def decoded(cls, photo: bytes) -> Image.Image | None:
        slot = cls.slot
        return slot[1] if slot is not None and slot[0] is photo else None


def photo_view(photo: bytes, max_side: int) -> Image.Image:
    """A kept photo (a JPEG) to show, within max_side, its full size in `.info["original_size"]`: resized from the
    decoded query while it is the last searched, else the JPEG decoded at a reduced scale (much cheaper than in
    full for a large photo). A new image: the caller may draw on it."""
    decoded = _LastQuery.decoded(photo)
    if decoded is None:
        return load_image(photo, max_side=max_side)
    view = shrink(decoded, max_side)
    view = view.copy() if view is decoded else view
    view.info["original_size"] = decoded.size
    return view


@dataclass
class UIResult:
    """What one search shows and what a session keeps of it: the query as searched (compressed), the result, and
    the gallery's items."""

    photo: bytes  # the query as searched, as a JPEG (`query` decodes it)
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
        ui = cls(photo or jpeg(query), result, gallery, category, **fields)
        if photo is None or query.info.get("original_size", query.size) == query.size:  # not a kept photo reduced
            _LastQuery.keep(ui.photo, query)
        return ui

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
        """The query photo, decoded anew (the session keeps only its JPEG)."""
        return Image.open(io.BytesIO(self.photo)).convert("RGB")

    def view(self, max_side: int) -> Image.Image:
        """The query photo to show, within max_side (`photo_view`)."""
        return photo_view(self.photo, max_side)

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
