"""mga.colour: a garment's colour in a photo, the product photo a card shows for it, and how the app says it."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mga.colour import (NOT_IN_COLOUR, GalleryColours, choose, colour_name, distance, garment_colour, histogram,
                        skin_mask, to_lab, upsample)
from mga.config import DEFAULT_INDEX_DIR
from mga.garments import parts_on_skin
from mga.matches import Match, SearchResult
from mga.search import SearchEngine
from ui.cards import caption, colours_text
from ui.results import api_payload
from ui.session import UIResult

SKIN = (224, 172, 140)
WHITE = (255, 255, 255)


def photo(top: tuple[int, int, int], bottom: tuple[int, int, int] = (120, 120, 120), skin: bool = True,
          size: tuple[int, int] = (120, 160)) -> Image.Image:
    """A studio photo: a figure on white, `top` over `bottom`, with skin (arms, face) around them."""
    img = Image.new("RGB", size, WHITE)
    d = ImageDraw.Draw(img)
    w, h = size
    if skin:
        d.ellipse([w * 0.4, h * 0.02, w * 0.6, h * 0.18], fill=SKIN)
        d.rectangle([w * 0.15, h * 0.2, w * 0.85, h * 0.45], fill=SKIN)
    d.rectangle([w * 0.3, h * 0.2, w * 0.7, h * 0.5], fill=top)
    d.rectangle([w * 0.3, h * 0.5, w * 0.7, h * 0.9], fill=bottom)
    return img


def top_attention(grid: int = 9) -> np.ndarray:
    """Part attention on the upper half of the letterbox (where `photo` has its top)."""
    att = np.zeros((2, grid, grid), dtype=np.float32)
    att[:, 1:5, 3:6] = 1.0
    return att / att.sum(axis=(1, 2), keepdims=True)


def test_lab_of_known_colours():
    assert to_lab(np.array([255, 255, 255], dtype=np.uint8)) == pytest.approx([100, 0, 0], abs=0.05)
    assert to_lab(np.array([255, 0, 0], dtype=np.uint8)) == pytest.approx([53.24, 80.09, 67.20], abs=0.1)
    assert to_lab(np.array([0.0, 0.0, 0.0])) == pytest.approx([0, 0, 0], abs=1e-9)


def test_the_garment_colour_leaves_out_the_studio_white_and_most_of_the_skin():
    blue = garment_colour(photo((30, 60, 200), bottom=(30, 60, 200)))
    plain = garment_colour(photo((30, 60, 200), bottom=(30, 60, 200), skin=False))
    assert blue.sum() == pytest.approx(1.0) and distance(blue, plain) < 0.25, "white and skin barely count"
    yellow = garment_colour(photo((240, 220, 40), bottom=(240, 220, 40)))
    assert distance(blue, yellow) > 0.9
    assert distance(blue, np.zeros_like(blue)) == 1.0 and distance(blue, blue) == pytest.approx(0.0, abs=1e-6)
    empty = histogram(to_lab(np.full((4, 4, 3), 255, dtype=np.uint8)), np.zeros((4, 4)))
    assert empty.sum() == 0, "nothing weighs: an empty colour, not a division by zero"


def test_attention_picks_the_garment_among_several_in_the_photo():
    query = photo((200, 30, 40), bottom=(40, 160, 60))  # a red top over green shorts
    red, green = photo((200, 30, 40), bottom=(120, 120, 120)), photo((40, 160, 60), bottom=(120, 120, 120))
    on_top = garment_colour(query, top_attention())
    assert distance(on_top, garment_colour(red)) < distance(on_top, garment_colour(green))


def test_a_card_shows_the_product_in_the_colour_nearest_the_query():
    photos = {1: photo((240, 220, 40)), 2: photo((30, 60, 200)), 3: photo((200, 30, 40)), 4: photo((35, 65, 190))}
    colours = {i: garment_colour(img) for i, img in photos.items()}
    product = [(1, "Yellow"), (2, "Blue"), (3, "Red"), (4, "Blue")]
    query = garment_colour(photo((25, 55, 210)))
    shown = choose(product, query, colours.get, best=1)
    assert shown.image in (2, 4) and shown.colour == "Blue" and shown.in_query_colour is True
    assert shown.others == ["Red", "Yellow"] or shown.others == ["Yellow", "Red"]
    assert set(shown.others) == {"Yellow", "Red"} and "Blue" not in shown.others, "one name per colour"
    green = garment_colour(photo((40, 170, 60), bottom=(40, 170, 60)))
    lacking = choose(product, green, colours.get, best=1)
    assert lacking.in_query_colour is False and distance(green, colours[lacking.image]) > NOT_IN_COLOUR
    asked = choose(product, query, colours.get, best=1, wanted="red")
    assert (asked.image, asked.colour, asked.in_query_colour) == (3, "Red", None)
    blind = choose(product, None, colours.get, best=3)
    assert (blind.image, blind.colour, blind.in_query_colour) == (3, "Red", None), "no query colour: the match"
    unreadable = choose(product, query, lambda i: None, best=1)
    assert unreadable.image == 1, "no photo could be read: the photo that matched"


def test_gallery_colours_reads_each_photo_once_and_skips_what_it_cannot_read():
    items = [{"item_id": "a", "meta": {"color": "Blue"}}, {"item_id": "a", "meta": {"color": "Red"}},
             {"item_id": "b", "meta": {}}, {"item_id": "b", "meta": {"colour": "blue "}}]
    reads = []

    def read(i: int) -> Image.Image:
        reads.append(i)
        if i == 1:
            raise OSError("gone")
        return photo((30, 60, 200))

    colours = GalleryColours(items, read)
    assert colours.photos("a") == [(0, "Blue"), (1, "Red")] and colours.photos("b") == [(2, ""), (3, "blue")]
    assert colours.colours("b") == {"blue"} and colours.names() == ["Blue", "Red"]
    assert colours(0) is not None and colours(0) is colours(0) and colours(1) is None and colours(1) is None
    assert reads == [0, 1], "each photo read once, a failure too"
    small = GalleryColours(items, read, kept=2)
    for i in (0, 2, 0, 3, 0):
        small(i)
    assert reads[2:] == [0, 2, 3], "the most recently used are kept"
    small(2)
    assert reads[-1] == 2 and len(reads) == 6, "the least recently used went first"
    assert colour_name({"color": " Green "}) == "Green" and colour_name(None) == ""
    reads.clear()
    assert GalleryColours(items, read, kept=3).warm() == 3 and reads == [0, 1, 2]  # as many as it keeps, in order
    reads.clear()
    assert GalleryColours(items, read).warm(stop=lambda: len(reads) == 2) == 2 and reads == [0, 1]  # told to stop


def card(**fields) -> Match:
    base = dict(rank=1, score=0.8, coarse_score=0.7, item_id="id_1", category="Bras & Tanks",
                image="img/WOMEN/Bras_Tanks/id_1/03_1_front.jpg", metadata={"product_name": "Erica Sports Bra",
                                                                          "color": "Yellow"},
                contributions=[0.1], part_names=["chest"], global_contribution=0.5, index=5, confidence=0.97)
    return Match(**{**base, **fields})


def test_the_caption_and_the_api_tell_the_shoppers_colour_and_the_others():
    matched = card()
    assert caption(matched) == "Erica Sports Bra · Yellow · 97%", "not compared: the matched photo's colour"
    blue = card(shown_index=3, shown_image="img/WOMEN/Bras_Tanks/id_1/01_1_front.jpg", shown_colour="Blue",
                other_colours=["Yellow", "Red"], in_query_colour=True)
    assert caption(blue) == "Erica Sports Bra · Blue · also Yellow, Red · 97%"
    lacking = card(shown_colour="Red", other_colours=["Yellow"], in_query_colour=False)
    assert colours_text(lacking) == "Red, not your colour · also Yellow"
    ui = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([blue], query_size=(20, 20)), [])
    r = api_payload(ui, "w")["results"][0]
    assert r["color"] == "Blue" and r["other_colors"] == ["Yellow", "Red"] and r["in_query_color"] is True
    assert r["url"] == "gallery/3/01_1_front.jpg" and r["image"].endswith("01_1_front.jpg")
    assert r["matched_url"] == "gallery/5/03_1_front.jpg" and r["matched_image"].endswith("03_1_front.jpg")


def test_the_summary_names_two_products_that_are_about_as_likely():
    first = card(confidence=0.48, close_to_next=True, metadata={"product_name": "Artemis Running Short"})
    second = card(rank=2, index=6, item_id="id_2", score=0.79, confidence=0.40,
                  metadata={"product_name": "Sybil Running Short"})
    ui = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([first, second], query_size=(20, 20)), [])
    assert ui.summary.startswith("**Artemis Running Short or Sybil Running Short?**") and "48% and 40%" in ui.summary
    apart = UIResult.of(Image.new("RGB", (20, 20)), SearchResult([card(confidence=0.9), card(
        rank=2, index=6, item_id="id_2", score=0.7, confidence=0.02)], query_size=(20, 20)), [])
    assert "?" not in apart.summary.split("\n")[0] and "No confident match" not in apart.summary


@pytest.fixture(scope="module")
def demo(default_model):
    return SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model)


def test_a_search_shows_each_product_in_the_colour_of_the_query(demo):
    """A demo-gallery photo searched again: its own product at #1, shown in the photo's own colour; a copy
    recoloured to another of the product's colours shows that one."""
    i = next(i for i, it in enumerate(demo.index.items) if it["meta"].get("product_name", "").startswith("Erica")
             and it["meta"].get("color") == "Blue")
    img = demo.gallery_image(i)
    res = demo.search(img, k=5, explain=False, products=True)
    m = res.matches[0]
    assert m.shown_colour == "Blue" and m.in_query_colour is True and "colour_ms" in res.timings
    assert set(m.other_colours) == {c for _, c in demo.colours.photos(m.item_id)} - {"Blue"}
    assert all(n.shown_index is not None for n in res.matches)


def test_the_colour_facet_lists_only_products_that_come_in_it(demo):
    img = demo.gallery_image(0)
    every = {m.item_id: m.confidence for m in demo.search(img, k=50, explain=False, products=True).matches}
    res = demo.search(img, k=10, explain=False, products=True, colour="yellow")
    for m in res.matches:  # hiding products makes none of the others likelier
        assert m.confidence == pytest.approx(every.get(m.item_id, 0.0), abs=1e-9), m.item_id
    assert res.matches and all("yellow" in demo.colours.colours(m.item_id) for m in res.matches)
    assert all(m.shown_colour == "Yellow" for m in res.matches)
    assert sum(m.confidence for m in res.matches) <= 1 + 1e-9
    with pytest.raises(ValueError, match="unknown colour"):
        demo.search(img, k=3, explain=False, colour="Plaid")


def test_attention_is_upsampled_as_pils_bilinear_resize_and_its_mass_on_skin_summed_over_cells():
    """upsample and parts_on_skin read PIL's resize as a matrix (resizing is linear): the same maps as resizing
    each one, and the same share of each map on skin."""
    rng = np.random.default_rng(1)
    maps = rng.random((6, 9, 9)).astype(np.float32)
    resized = np.stack([np.asarray(Image.fromarray(m, mode="F").resize((64, 64), Image.BILINEAR)) for m in maps])
    assert np.allclose(upsample(maps, 64), resized.sum(0), atol=1e-5)
    light, a = np.meshgrid(np.linspace(20, 95, 64), np.linspace(-40, 40, 64), indexing="ij")
    lab = np.stack([light, a, np.full((64, 64), 30.0)], -1)  # some pixels skin-coloured, some not
    skin = skin_mask(lab)
    assert 0 < skin.mean() < 1
    expected = (resized * skin).sum((1, 2)) / resized.sum((1, 2))
    assert np.allclose(parts_on_skin(maps, lab), expected, atol=1e-6)

