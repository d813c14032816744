"""Zoom views (mga.views): windows over real studio photos, best-view ranking, and a close-up query that the
index finds through the window it shows, with the window reported and the heatmap inside it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LUMA
from index_builder import build_index
from mga.explain import to_image_frame
from mga.imageio import load_image
from mga.coarse import best_per_image
from mga.search import SearchEngine
from mga.transforms import garment_mask
from mga.views import FULL_BOX, ZoomViews, crop


def test_windows_cover_the_garment_of_a_studio_photo(luma_photos):
    img = load_image(luma_photos[0], max_side=576)
    zoom = ZoomViews()
    boxes = zoom.boxes(img)
    assert boxes[0] == FULL_BOX and 2 <= len(boxes) <= zoom.max_per_image
    mask = garment_mask(img)
    for b in boxes[1:]:
        assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1
        w, h = (b[2] - b[0]) * img.width, (b[3] - b[1]) * img.height
        assert abs(w - h) <= 2  # square windows
        x0, y0 = round(b[0] * img.width), round(b[1] * img.height)
        assert mask[y0:y0 + round(h), x0:x0 + round(w)].mean() >= zoom.min_cover - 0.05
    assert ZoomViews(grid=0).boxes(img) == [FULL_BOX]
    assert crop(img, FULL_BOX) is img
    blank = Image.new("RGB", (200, 100), "white")  # no garment: windows over the whole frame are all background
    assert ZoomViews().boxes(blank) == [FULL_BOX]


def test_an_image_scores_as_its_best_view():
    b, pick = best_per_image(np.array([0.1, 0.9, 0.3, 0.5, 0.5]), np.array([2, 1, 2]))
    assert b.tolist() == pytest.approx([0.9, 0.3, 0.5]) and pick.tolist() == [1, 2, 3]  # the first view on ties
    rng = np.random.default_rng(0)  # segment reductions against a plain loop, many ties included
    counts = rng.integers(1, 15, 300)
    scores = rng.integers(0, 20, counts.sum()).astype(np.float32) / 20
    b, pick = best_per_image(torch.from_numpy(scores), counts)
    starts = np.cumsum(counts) - counts
    ref = [(scores[s:s + c].max(), s + int(np.argmax(scores[s:s + c]))) for s, c in zip(starts, counts)]
    assert b.tolist() == [r[0] for r in ref] and pick.tolist() == [r[1] for r in ref]


def test_heatmap_of_a_window_lies_inside_it():
    grid = np.random.default_rng(0).random((9, 9)).astype(np.float32)
    box = (0.25, 0.5, 0.75, 0.9)
    frame = to_image_frame(grid, 400, 200, 288, None, box)
    assert frame.shape == (200, 400) and frame.max() == pytest.approx(1.0)
    inside = np.zeros_like(frame, dtype=bool)
    inside[100:180, 100:300] = True
    assert frame[~inside].max() == 0.0 and frame[inside].min() == 0.0  # the coldest value, also outside


@pytest.mark.requires_shared
def test_close_up_query_is_found_through_its_window(tmp_path, default_model):
    gallery = tmp_path / "gallery"
    photos = sorted(LUMA.glob("img/WOMEN/*/*/*.jpg"))[::40][:6]
    for p in photos:
        (gallery / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, gallery / p.parent.name / p.name)
    out = tmp_path / "index"
    build_index(gallery, out, model=default_model, workers=0, progress=False, log=lambda m: None)
    engine = SearchEngine.load(out, model=default_model)
    ix = engine.index
    assert ix.zoom == ZoomViews() and ix.views > len(ix) == 6
    target = 3
    rows = ix.view_rows([target])
    window = int(rows[len(rows) // 2])  # a window in the middle of the garment
    box = tuple(float(b) for b in ix.boxes[window])
    original = load_image(ix.image_path(target), max_side=2 * default_model.config.image_size)
    query = crop(original, box)  # exactly what that window saw: a shopper's close-up of the same garment
    res = engine.search(query, k=3)
    top = res.matches[0]
    assert top.index == target and top.box == pytest.approx(box, abs=1e-6)
    assert top.coarse_score == pytest.approx(1.0, abs=1e-3)
    heat = engine.match_heatmap(res, top)
    h, w = heat.shape
    x0, y0, x1, y1 = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    outside = np.ones((h, w), dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert heat[outside].max() == 0.0 and heat.max() == pytest.approx(1.0)
    assert top.to_dict()["matched_view"] == [round(b, 4) for b in box]
