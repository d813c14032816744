"""mga.garments: the garments a photo shows, from the part attention and the photo's colours; on drawn photos
whose answer is known, and on the app's example shop photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mga.colour import photo_pixels
from mga.config import DEFAULT_INDEX_DIR
from mga.garments import Garment, find_garments, parts_on_skin
from mga.part_names import garment_kind
from mga.search import SearchEngine

EXAMPLES = Path(__file__).parents[1] / "assets" / "examples"
SKIN = (224, 172, 140)


def figure(lower: tuple[int, int, int]) -> Image.Image:
    """A 200 x 400 studio photo: a red top over rows 80-240, below it `lower` down to the bottom edge."""
    img = Image.new("RGB", (200, 400), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([50, 80, 150, 240], fill=(200, 30, 30))
    draw.rectangle([60, 240, 140, 399], fill=lower)
    return img


def attention_on_rows(y0: float, y1: float, grid: int = 20) -> np.ndarray:
    """Part attention (2, grid, grid) on the photo's letterbox, all of it on the rows y0..y1 of a 1:2 photo."""
    attn = np.zeros((2, grid, grid), np.float32)
    # a 1:2 photo fills the letterbox's height and its middle half of the width
    rows = slice(int(y0 * grid), max(int(np.ceil(y1 * grid)), int(y0 * grid) + 1))
    attn[:, rows, grid // 4:grid - grid // 4] = 1.0
    return attn / attn.sum(axis=(1, 2), keepdims=True)


def garments(photo: Image.Image, attn: np.ndarray, category: str) -> list[Garment]:
    return find_garments(photo.size, photo_pixels(photo)[1], attn, category)


def test_the_bottoms_below_a_top_are_found_and_bare_legs_are_not():
    dressed = garments(figure((40, 40, 160)), attention_on_rows(0.2, 0.6), "Tees")
    assert [(g.kind, g.found) for g in dressed] == [("top", True), ("bottom", False)]
    top, bottom = (g.box for g in dressed)
    assert top[1] == pytest.approx(0.2, abs=0.06) and top[3] == pytest.approx(0.6, abs=0.08)
    assert bottom[1] < top[3] and bottom[3] == 1.0  # from just inside the top's hem down
    assert 0.15 < bottom[0] < 0.3 and 0.7 < bottom[2] < 0.85  # the figure's columns, not the white around it
    assert [g.kind for g in garments(figure(SKIN), attention_on_rows(0.2, 0.6), "Tees")] == ["top"]
    assert garments(figure(SKIN), attention_on_rows(0.2, 0.6), "Shoes") == []  # no garment of either kind


def test_a_garment_crops_its_region_and_lists_its_kind_of_the_shop():
    g = Garment("bottom", (0.25, 0.5, 0.75, 1.0), False)
    assert g.crop(Image.new("RGB", (200, 400))).size == (100, 200)
    assert g.categories(["Tees", "Pants", "Shorts", "Jackets"]) == ["Pants", "Shorts"]
    assert g.name == "Bottoms"


@pytest.fixture(scope="module")
def engine():
    return SearchEngine.load(DEFAULT_INDEX_DIR)


def test_a_shop_photo_of_a_tee_over_bottoms_offers_them_and_their_search_lists_only_bottoms(engine):
    photo = Image.open(EXAMPLES / "tanks-tristan-endurance-tank.jpg").convert("RGB")
    res = engine.search(photo, k=5, products=True)
    assert garment_kind(res.matches[0].category) == "top"
    found, other = res.garments
    assert found.found and found.kind == "top" and other.kind == "bottom" and not other.found
    assert other.box[1] > found.box[1] and other.box[3] == 1.0  # below the top
    alone = engine.search(other.crop(photo), k=5, products=True, category=other.categories(engine.categories))
    assert alone.matches and {garment_kind(m.category) for m in alone.matches} == {"bottom"}


def test_a_shop_photo_of_pants_offers_no_top_over_a_bare_chest(engine):
    res = engine.search(EXAMPLES / "pants-viktor-lumatech-pant.jpg", k=5, products=True)
    assert [(g.kind, g.found) for g in res.garments] == [("bottom", True)]
    assert res.garments[0].box[3] > 0.8  # the legs, not only the hips the parts attend to


def test_a_part_on_bare_legs_lies_on_skin_and_one_on_the_top_does_not():
    photo = figure(SKIN)  # a red top over bare skin
    attn = np.stack([attention_on_rows(0.25, 0.55)[0], attention_on_rows(0.65, 0.95)[0]])
    attn[1][:, :9] = attn[1][:, 12:] = 0  # on the legs alone: the photo's middle 40% (the letterbox's middle 20%)
    on_top, on_legs = parts_on_skin(attn, photo_pixels(photo)[0])
    assert on_top < 0.1 and on_legs > 0.5


def test_the_benches_measure_the_example_photos(engine):
    """bench.garments and bench.skin end to end on three example shop photos whose products the demo shop sells."""
    from bench.garments import measure as garments_measure
    from bench.skin import measure as skin_measure

    names = ["tanks-tristan-endurance-tank.jpg", "pants-viktor-lumatech-pant.jpg", "tees-ryker-lumatech-tee-v-neck.jpg"]
    photos = [Image.open(EXAMPLES / n).convert("RGB") for n in names]
    truth = [(engine.search(p, k=1, products=True).matches[0].item_id, c) for p, c in
             zip(photos, ["Tanks", "Pants", "Tees"])]
    g = garments_measure(engine, photos, truth)
    assert g["whole_photo_r1"] == 1.0 and g["garments_named"] == 1.0 and g["found_kind_is_the_products"] == 1.0
    assert g["other_garment_offered"] == pytest.approx(2 / 3) and g["other_garment_results_all_of_its_kind"] == 1.0
    s = skin_measure(engine, photos)
    assert s["queries"] == 3 and 0 <= s["heat_on_skin_mean"] <= 1 and len(s["part_on_skin_mean"]) == 6


def test_a_photo_of_something_the_shop_does_not_sell_names_no_garments(engine):
    """A phone photo of a dress (the shop sells none): its #1 is no likely match, so its kind says nothing of the
    photo's garments, and none are offered."""
    res = engine.search(EXAMPLES / "not-sold-dress-phone-photo.jpg", k=3, products=True)
    assert res.matches and res.matches[0].confidence < 0.5 and res.garments == []
