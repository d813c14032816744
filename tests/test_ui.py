"""ui.inputs and ui.results on hand-made values: what users send is checked with a message that says what to do,
and what they see (the chart, the words on a match, the API's JSON) follows from the match's numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mga.config import MIN_IMAGE_SIDE
from mga.explain import OVERALL, WHOLE
from mga.imageio import ImageError, load_image
from mga.matches import Match, SearchResult
from ui.chart import OVERALL_LOOK, WHOLE_MATCH, bar_chart, term_choices
from ui.details import what_decided
from ui.inputs import CROP_VIEW_SIDE, add_corner, crop_to_corners, crop_view, parse_category, parse_k
from ui.results import api_payload
from ui.session import UIResult, jpeg
from ui.settings import ALL_CATEGORIES, MAX_K

CATEGORIES = ["Hoodies_Sweatshirts", "Bras_Tanks", "Pants"]
BLUE, RED, GREY = (0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28), (0xC8, 0xC8, 0xC8)  # bar_chart's colours
TOP, ROW = 10, 26  # bar_chart's top margin and row height (its defaults)


def match(contributions, global_=0.3, anchor=0.1, names=None, index=0, confidence=None, rank=1, **kw) -> Match:
    """A match whose score is the sum of its terms, as ATA's is."""
    names = names or ["collar", "sleeves", "hem", "pocket"][: len(contributions)]
    score = global_ + anchor + sum(contributions)
    return Match(rank=rank, score=score, coarse_score=score - 0.01, item_id=f"id_{index:08d}", category="Tees",
                 image=f"img/MEN/Tees/id_{index:08d}/01_1_front.jpg", metadata=kw.pop("metadata", {}),
                 contributions=list(contributions), part_names=names, global_contribution=global_,
                 anchor_contribution=anchor, index=index, confidence=confidence, **kw)


# --- parse_k -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, expected", [(1, 1), (5, 5), ("7", 7), (" 12 ", 12), (3.0, 3), ("20.0", 20),
                                         (np.int64(9), 9), (MAX_K, MAX_K)])
def test_parse_k_takes_whole_numbers_in_any_form(k, expected):
    got = parse_k(k)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("k", [0, -3, MAX_K + 1, 2.5, "ten", "", None, True, False, float("nan"), "inf", [5]])
def test_parse_k_refuses_what_is_not_a_whole_number_from_1_to_max(k):
    with pytest.raises(ValueError) as err:
        parse_k(k)
    assert str(err.value) == f"k must be a whole number from 1 to {MAX_K}, not {k!r}"


# --- parse_category ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", ALL_CATEGORIES])
def test_parse_category_all_means_no_filter(value):
    assert parse_category(value, CATEGORIES) is None


@pytest.mark.parametrize("spelling, name", [
    ("Hoodies_Sweatshirts", "Hoodies_Sweatshirts"),
    ("Hoodies & Sweatshirts", "Hoodies_Sweatshirts"),
    ("hoodies sweatshirts", "Hoodies_Sweatshirts"),
    ("  HOODIES-sweatshirts ", "Hoodies_Sweatshirts"),
    ("bras/tanks", "Bras_Tanks"),
    ("pants", "Pants"),
])
def test_parse_category_gives_the_indexs_name_for_any_spelling(spelling, name):
    assert parse_category(spelling, CATEGORIES) == name


def test_parse_category_refuses_an_unknown_one_and_lists_the_choices():
    with pytest.raises(ValueError) as err:
        parse_category("Dresses", CATEGORIES)
    assert str(err.value) == ("Unknown category 'Dresses'; choose 'All' or one of: "
                              "Hoodies_Sweatshirts, Bras_Tanks, Pants")
    with pytest.raises(ValueError, match="Unknown category 'Hoodies'"):  # a part of a name is not the name
        parse_category("Hoodies", CATEGORIES)
    with pytest.raises(ValueError, match="Unknown category 5;"):
        parse_category(5, CATEGORIES)


def test_parse_category_never_echoes_a_huge_string():
    with pytest.raises(ValueError) as err:
        parse_category("x" * 10_000, CATEGORIES)
    assert f"'{'x' * 60}...'" in str(err.value) and len(str(err.value)) < 200


# --- crop_to_corners ---------------------------------------------------------------------------------------

@pytest.fixture
def query() -> Image.Image:
    """A 100 x 80 photo whose every pixel tells where it is (red: x, green: y)."""
    x, y = np.meshgrid(np.arange(100), np.arange(80))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


@pytest.mark.parametrize("corners", [[(10, 20), (60, 70)], [(60, 70), (10, 20)],
                                     [(60, 20), (10, 70)], [(10, 70), (60, 20)]])
def test_crop_takes_two_opposite_corners_in_any_order(query, corners):
    crop = np.asarray(crop_to_corners(query, corners))
    assert crop.shape == (50, 50, 3)
    assert crop[0, 0].tolist() == [10, 20, 0] and crop[-1, -1].tolist() == [59, 69, 0]  # the box's own pixels


def test_crop_of_exactly_the_smallest_side_is_kept(query):
    assert crop_to_corners(query, [(0, 0), (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)]).size == (MIN_IMAGE_SIDE,) * 2


@pytest.mark.parametrize("corners", [[(10, 10), (10 + MIN_IMAGE_SIDE - 1, 60)],
                                     [(10, 60), (70, 60 - MIN_IMAGE_SIDE + 1)], [(30, 30), (30, 30)]])
def test_crop_too_small_is_refused_with_the_size(query, corners):
    with pytest.raises(ImageError) as err:
        crop_to_corners(query, corners)
    assert str(err.value) == (f"Crop by hand: the box is under {MIN_IMAGE_SIDE} px a side; "
                              "click two corners further apart.")


def test_clicks_on_the_crop_view_of_a_large_kept_photo_land_on_its_full_size_pixels():
    """The crop view is decoded reduced from the session's JPEG (UIResult.view): a click on it maps to the pixels
    of the full photo, which crop_to_corners crops."""
    photo = Image.new("RGB", (1200, 1600), "white")
    view = load_image(jpeg(photo), max_side=CROP_VIEW_SIDE)
    shown = crop_view(view, [])
    assert max(shown.size) == CROP_VIEW_SIDE and view.info["original_size"] == (1200, 1600)
    corners = add_corner([], (shown.width, shown.height), view)
    assert corners == [(1200, 1600)]
    corners = add_corner(corners, (shown.width // 2, shown.height // 4), view)
    assert corners[0] == (1200, 1600) and abs(corners[1][0] - 600) <= 3 and abs(corners[1][1] - 400) <= 4
    assert add_corner(corners, (0, 0), view) == [(0, 0)]  # a third click starts anew


def test_the_last_search_shows_its_decoded_photo_and_an_earlier_one_its_kept_jpeg():
    """A search's views come from the photo it decoded (no JPEG decoded again, no JPEG loss) while it is the last
    searched; an earlier session's views decode its kept JPEG, at the same size and full size."""
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((300, 200), (900, 1200))]
    empty = SearchResult([], {}, (0, 0), False, None)
    earlier, last = UIResult.of(noise[1], empty, []), UIResult.of(noise[0], empty, [])
    shown = last.view(CROP_VIEW_SIDE)
    assert np.array_equal(np.asarray(shown), np.asarray(noise[0])) and shown is not last.view(CROP_VIEW_SIDE)
    assert shown.info["original_size"] == (300, 200)
    old = earlier.view(CROP_VIEW_SIDE)
    assert np.array_equal(np.asarray(old), np.asarray(load_image(earlier.photo, max_side=CROP_VIEW_SIDE)))
    assert old.size == (360, 480) and old.info["original_size"] == (900, 1200)
    assert UIResult.of(noise[1], empty, []).view(CROP_VIEW_SIDE).size == (360, 480)
    kept = jpeg(noise[1])  # a caller's photo, decoded reduced for the search: its views are of the photo it keeps
    reduced = load_image(kept, max_side=600)
    view = UIResult.of(reduced, empty, [], photo=kept).view(CROP_VIEW_SIDE)
    assert view.info["original_size"] == (900, 1200) == UIResult.of(reduced, empty, [], photo=kept).query.size


def test_only_the_last_search_keeps_its_photo_decoded_and_each_gets_its_jpeg():
    """A search's JPEG is made when first read (the step after its results) or when the next search comes: only
    the last search keeps decoded pixels, whatever the number of sessions."""
    rng = np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(2)]
    empty = SearchResult([], {}, (0, 0), False, None)
    first = UIResult.of(photos[0], empty, [])
    assert first.kept is photos[0]  # nothing encoded while the results are made
    second = UIResult.of(photos[1], empty, [])
    assert first.kept == jpeg(photos[0]) and second.kept is photos[1]  # the slot moved on: the first one encoded
    assert second.photo == jpeg(photos[1]) and second.kept is second.photo
    assert np.array_equal(np.asarray(second.view(64)), np.asarray(photos[1]))  # still the last: its own pixels


@pytest.mark.parametrize("corners", [[], [(10, 10)], [(0, 0), (50, 50), (90, 70)]])
def test_crop_needs_two_corners(query, corners):
    with pytest.raises(ImageError, match="click two opposite corners of the garment"):
        crop_to_corners(query, corners)


# --- term_choices ------------------------------------------------------------------------------------------

def test_term_choices_are_the_whole_match_the_overall_look_then_each_part_by_name():
    m = match([0.1, 0.05, 0.02], names=["collar", "sleeves", "hem"])
    assert term_choices(m) == [(WHOLE_MATCH, WHOLE), (OVERALL_LOOK, OVERALL), ("collar", "0"), ("sleeves", "1"),
                               ("hem", "2")]


# --- bar_chart ---------------------------------------------------------------------------------------------

def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for hit in mask:
        run = run + 1 if hit else 0
        best = max(best, run)
    return best


def bars(chart: Image.Image, n: int) -> list[tuple[tuple[int, int, int], int]]:
    """Each row's bar: (its colour, its length in pixels), read from the middle line of the row (the longest run
    of one bar colour: a few anti-aliased pixels of the text may have a bar's colour too)."""
    a = np.asarray(chart)
    out = []
    for i in range(n):
        line = a[TOP + i * ROW + ROW // 2]
        found = [(c, longest_run((line == c).all(1))) for c in (BLUE, RED, GREY)]
        coloured = [(c, w) for c, w in found if w >= 4]
        assert len(coloured) == 1, f"row {i}: {found}"
        out.append(coloured[0])
    return out


def test_bar_chart_has_one_bar_per_term_as_long_as_its_term():
    m = match([0.12, -0.04, 0.2], global_=0.25, anchor=0.15)
    chart = bar_chart(m)
    assert chart.size == (420, 2 * TOP + ROW * 4 + 18)  # the overall look and three parts
    got = bars(chart, 4)
    assert [c for c, _ in got] == [BLUE, BLUE, RED, BLUE], "a negative term is red, the others blue"
    values = [0.25 + 0.15, 0.12, 0.04, 0.2]
    unit = got[0][1] / values[0]  # pixels per unit of score
    assert [w for _, w in got] == pytest.approx([v * unit for v in values], abs=2)
    assert (np.asarray(chart)[TOP + 4 * ROW + 5:] != 255).any(), "the axis is labelled"


def test_bar_chart_greys_the_terms_the_photos_do_not_show():
    m = match([0.12, -0.04, 0.2])
    assert [c for c, _ in bars(bar_chart(m, OVERALL), 4)] == [BLUE, GREY, GREY, GREY]
    assert [c for c, _ in bars(bar_chart(m, "2"), 4)] == [GREY, GREY, GREY, BLUE]
    assert [c for c, _ in bars(bar_chart(m, "1"), 4)] == [GREY, GREY, RED, GREY]  # part 1: the third row
    one = match([0.3], names=["collar"])
    assert bar_chart(one).height == 2 * TOP + ROW * 2 + 18


# --- what_decided ------------------------------------------------------------------------------------------

def test_what_decided_names_a_detail_only_on_a_confident_match():
    m = match([0.2, 0.05, 0.05], global_=0.25, anchor=0.05)  # score 0.6, the collar 1/3 of it
    assert what_decided(m, confident=True) == ("The overall look carried 50% of the score; the detail that "
                                               "stood out: **collar** (33%).")
    assert what_decided(m, confident=False) == "Not sure this is a product the shop sells, so no detail is named."
    on_skin = what_decided(m, True, on_skin=[0.6, 0.0, 0.0])  # the collar's part lies on bare skin
    assert "**collar**" not in on_skin and on_skin.startswith("The part that stood out lies on skin")
    assert "**collar** (33%)" in what_decided(m, True, on_skin=[0.4, 0.9, 0.9])  # the others' skin does not matter


def test_what_decided_names_no_detail_that_does_not_stand_out():
    close = match([0.12, 0.1, 0.02], global_=0.3, anchor=0.06)  # 0.12 < 1.5 x 0.1: no detail stands out
    assert what_decided(close, True) == "No single detail stood out: the overall look decided (60% of the score)."
    small = match([0.07, 0.01], global_=0.8, anchor=0.12)  # 7% of the score: under the share that names a part
    assert what_decided(small, True) == "No single detail stood out: the overall look decided (92% of the score)."
    just = match([0.09, 0.06, 0.0], global_=0.75, anchor=0.1)  # 9% of the score, exactly 1.5 x the next
    assert "**collar** (9%)" in what_decided(just, True)
    alone = match([0.1], global_=0.4, anchor=0.0, names=["collar"])  # one part: nothing to stand out against
    assert "**collar** (20%)" in what_decided(alone, True)


# --- api_payload -------------------------------------------------------------------------------------------

def test_api_payload_lists_the_products_with_relative_urls_and_no_machine_path(tmp_path):
    first = match([0.2, 0.1], index=7, confidence=0.83, metadata={"product_name": "Ryker Tee &amp; Co",
                                                                  "color": "Blue", "sku": "MT07"})
    second = match([0.05, 0.02], index=3, confidence=0.1, rank=2, metadata={"color": ""})
    result = SearchResult([first, second], timings={"total_ms": 12.3456, "encode_ms": 7.0}, query_size=(64, 48),
                          whole_garment=True)
    copies = [(str(tmp_path / "mga-gallery-x" / f"{m.index}.jpg"), "caption") for m in result.matches]
    ui = UIResult.of(Image.new("RGB", (64, 48), "white"), result, copies)
    payload = api_payload(ui, "embedded default")
    text = json.dumps(payload)  # all of it is JSON
    assert str(tmp_path) not in text and "mga-gallery-x" not in text, "the app's copies are its own business"
    assert payload["k"] == 2 and payload["category"] == ALL_CATEGORIES and payload["confident"] is True
    assert payload["query_size"] == [64, 48] and payload["whole_garment"] is True
    assert payload["timings_ms"] == {"total_ms": 12.35, "encode_ms": 7.0} and payload["weights"] == "embedded default"
    a, b = payload["results"]
    assert a["url"] == "gallery/7/01_1_front.jpg" and b["url"] == "gallery/3/01_1_front.jpg"
    assert a["image"] == "img/MEN/Tees/id_00000007/01_1_front.jpg"
    for r in payload["results"]:
        assert not r["url"].startswith("/") and not r["image"].startswith("/")
    assert a["product_name"] == "Ryker Tee & Co" and a["color"] == "Blue" and "sku" not in a
    assert b["product_name"] == "Tees" and b["color"] == "", "no name: the category says what it is"
    assert a["score"] == pytest.approx(0.7) and a["parts"] == [{"name": "collar", "contribution": 0.2},
                                                               {"name": "sleeves", "contribution": 0.1}]
    assert a["confidence"] == 0.83 and a["rank"] == 1


def test_api_payload_says_when_no_match_is_confident():
    weak = match([0.05], index=1, confidence=0.2)
    ui = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([weak], query_size=(20, 20)), [], "Pants")
    payload = api_payload(ui, "org/name@abc")
    assert payload["confident"] is False and payload["category"] == "Pants" and payload["k"] == 1
    uncalibrated = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([match([0.05])], query_size=(20, 20)), [])
    assert api_payload(uncalibrated, "w")["confident"] is True, "weights without a calibration: no doubt"
    empty = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([], query_size=(20, 20)), [])
    assert api_payload(empty, "w") | {"timings_ms": {}} == {
        "results": [], "confident": False, "k": 0, "category": ALL_CATEGORIES, "color": ALL_CATEGORIES,
        "query_size": [20, 20],
        "whole_garment": False, "garments": [], "timings_ms": {}, "weights": "w"}
