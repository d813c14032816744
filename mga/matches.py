"""What a search returns: ranked matches, each with why it matched (per-part contributions, heatmaps, the view
that matched) and how sure it is (confidence); plain data, as the app, the API and the CLI show it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .explain import ScoreMaps
from .views import FULL_BOX


@dataclass
class Match:
    """One gallery image found for a query, with why it matched."""

    rank: int
    score: float  # ATA score (the coarse score where the match was not re-ranked)
    coarse_score: float
    item_id: str
    category: str
    image: str  # the gallery image, relative to its gallery root: what users and API clients see
    metadata: dict
    contributions: list[float]  # per part, ATA's c_k
    part_names: list[str]  # per part, its name on garments of this match's category (mga.part_names.names_for)
    global_contribution: float  # the trained global token's term
    anchor_contribution: float = 0.0  # the pretrained backbone's descriptor's term (training.anchor)
    index: int = -1  # the image in the index: its file is read through GalleryIndex.read_image (gallery_image)
    box: tuple[float, float, float, float] = FULL_BOX  # the view that matched: the full photo or a zoom window
    row: int = -1  # the index row of that view
    assignment: np.ndarray | None = None  # (K, K) ATA's soft assignment pi of the query's parts to this view's
    query_maps: ScoreMaps | None = None  # the score spread over the query's cells, term by term (mga.explain)
    match_maps: ScoreMaps | None = None  # the same over the match's view (both on demand: mga.explained)
    photos: int = 1  # photos of this match's product in the gallery
    lead: float | None = None  # score minus the best other product's (negative below it): what the confidence reads
    confidence: float | None = None  # calibrated probability that this is the query's product (mga.confidence)
    category_vote: float = 0.0  # what its category gained in the vote on the query's kind (mga.category_vote)
    close_to_next: bool = False  # the next other product listed is about as likely (mga.confidence.CLOSE)
    # The product's photo its card shows: the one in the colour nearest the query's garment, or in the colour asked
    # for (mga.colour); None: the photo that matched (`index`)
    shown_index: int | None = None
    shown_image: str | None = None  # that photo, relative to its gallery root
    shown_colour: str | None = None  # its colour name (None: the matched photo's, metadata["color"])
    other_colours: list[str] = field(default_factory=list)  # the product's other colours, nearest the query's first
    in_query_colour: bool | None = None  # whether the product comes in the query's colour (None: not compared)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "coarse_score": round(self.coarse_score, 6),
                "item_id": self.item_id, "category": self.category, "image": self.image,
                "parts": [{"name": n, "contribution": round(c, 6)}
                          for n, c in zip(self.part_names, self.contributions)],
                "global_contribution": round(self.global_contribution, 6),
                "anchor_contribution": round(self.anchor_contribution, 6),
                "matched_view": [round(b, 4) for b in self.box], "photos": self.photos,
                "lead": None if self.lead is None else round(self.lead, 6),
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "category_vote": round(self.category_vote, 6), "close_to_next": self.close_to_next,
                "shown_image": self.shown_image or self.image, "other_colors": list(self.other_colours),
                "in_query_color": self.in_query_colour}


@dataclass
class SearchResult:
    matches: list[Match]
    timings: dict[str, float] = field(default_factory=dict)  # encode_ms search_ms rerank_ms ... total_ms
    query_size: tuple[int, int] = (0, 0)  # (width, height) of the query image
    whole_garment: bool = False  # searched among full photos only (not a close-up: mga.closeup)
    query_global: np.ndarray | None = None  # the query's global token: the match side of an explanation needs it
    garments: list = field(default_factory=list)  # the garments the photo shows (mga.garments.Garment), found first
    parts_on_skin: np.ndarray | None = None  # (K,) each query part's share of its attention on skin (mga.garments)
    query_id: int | None = None  # its query's cells in the engine's store (mga.explained); None: not explained

    def __post_init__(self):
        scores = [m.score + m.category_vote for m in self.matches]
        if any(a < b - 1e-6 for a, b in zip(scores, scores[1:])):
            raise AssertionError("search results must be sorted by score and category vote")
        if len({m.index for m in self.matches}) != len(self.matches):
            raise AssertionError("search results must not repeat an image")

    def to_json(self) -> list[dict]:
        return [m.to_dict() for m in self.matches]
