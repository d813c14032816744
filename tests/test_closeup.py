"""mga.closeup: close-ups search the gallery's zoom windows too, whole garments its full photos only; on real
photos, the real index and the embedded default's fitted detector."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import DISTRACTORS, LUMA, LUMA_TINY
from galleries import copy_some
from index_builder.build import build_index
from mga import closeup
from training import closeup as fitting
from training.calibration import balanced_weights, logistic_regression
from mga.data import load_retrieval_data
from mga.imageio import load_image
from mga.search import SearchEngine
from mga.views import FULL_BOX, ZoomViews


def photos_of_view(split: str, view: str, n: int):
    data = load_retrieval_data(LUMA)
    return [data.root / r.path for r in getattr(data, split) if fitting.photo_view(r) == view][:n]


@pytest.mark.requires_shared
def test_the_default_tells_test_close_ups_from_whole_garments(default_model):
    """The shipped detector, on photos it was not fitted on: the test split's close-ups and fronts, and phone
    photos of distractors/test."""
    assert default_model.config.closeup["fingerprint"] == default_model.fingerprint()
    close = [load_image(p) for p in photos_of_view("query", "additional", 8)]
    fronts = [load_image(p) for p in photos_of_view("query", "front", 8)]
    phones = [load_image(p) for p in sorted((DISTRACTORS / "test").rglob("*.jpg"))[::40][:8]]
    whole = {name: closeup.whole_garment(closeup.detector(default_model), default_model.encode_images(imgs).embedding,
                                   "auto")
             for name, imgs in (("close", close), ("fronts", fronts), ("phones", phones))}
    assert whole["close"].float().mean() <= 0.25, whole
    assert whole["fronts"].all() and whole["phones"].float().mean() >= 0.75, whole


def test_views_all_and_full_override_the_detector_and_stale_or_bad_detectors_are_ignored(default_model, luma_photos):
    emb = default_model.encode_images([load_image(p) for p in luma_photos]).embedding
    assert not closeup.whole_garment(closeup.detector(default_model), emb, "all").any()
    assert closeup.whole_garment(closeup.detector(default_model), emb, "full").all()
    with pytest.raises(ValueError, match="views must be one of"):
        closeup.whole_garment(closeup.detector(default_model), emb, "windows")
    stale = copy.deepcopy(default_model)
    stale.config.closeup = {**stale.config.closeup, "fingerprint": "fitted-for-other-weights"}
    bad = copy.deepcopy(default_model)
    bad.config.closeup = {**bad.config.closeup, "weights": [0.0, 1.0]}  # a hand-edited config.json
    for model in (stale, bad):
        with pytest.warns(UserWarning, match="fitted for other weights"):
            assert not closeup.whole_garment(closeup.detector(model), emb, "auto").any()


@pytest.fixture(scope="module")
def engine(tmp_path_factory, default_model):
    gallery = tmp_path_factory.mktemp("closeup-gallery")
    copy_some(gallery, 40, step=16)
    out = tmp_path_factory.mktemp("closeup") / "index"
    build_index(gallery, out, model=default_model, workers=0, progress=False, log=lambda m: None,
                zoom=ZoomViews(grid=2))
    return SearchEngine.load(out, model=default_model)


@pytest.mark.requires_shared
def test_the_engine_searches_a_whole_garment_among_full_photos_only(engine):
    front = photos_of_view("query", "front", 1)[0]
    res = engine.search(front, k=8, views="auto")
    assert res.whole_garment
    for m in res.matches:  # every match through its image's full photo
        assert m.row == engine.index.first_row[m.index] and m.box == pytest.approx(FULL_BOX)
    default = engine.search(front, k=8, explain=False)
    assert not default.whole_garment  # config.DEFAULT_VIEWS: every view, detector or not
    every = {m.index: m.score for m in default.matches}
    both = [m for m in res.matches if m.index in every]
    assert both and all(every[m.index] >= m.score - 1e-5 for m in both)  # more views: each scores as high or more
    flat = engine.search(front, k=8, views="full", explain=False, category=engine.categories[0])
    assert all(m.row == engine.index.first_row[m.index] for m in flat.matches)  # the exact path of a category


@pytest.mark.requires_shared
def test_search_cli_reports_the_views_it_searched(engine, capsys):
    from mga.search import main

    front = photos_of_view("query", "front", 1)[0]
    for views, whole in (("auto", True), ("all", False)):
        assert main(["--index", str(engine.index.path), "--image", str(front), "-k", "3", "--views", views,
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["whole_garment"] is whole and len(out["matches"]) == 3


@pytest.mark.requires_shared
def test_fit_on_training_photos_learns_their_close_ups(default_model):
    """Refitting from the training split and the validation phone photos (a sample, for time) separates them."""
    data = load_retrieval_data(LUMA)
    closeups, whole = fitting.training_photos(data, DISTRACTORS / "validation")
    assert len(closeups) == 47 and all("test" not in p.parts for p in whole)
    fitted = fitting.fit(default_model, closeups[:16], whole[::20])
    model = copy.deepcopy(default_model)
    model.config.closeup = fitted
    seen = model.encode_images([load_image(p) for p in closeups[:16] + whole[::20]]).embedding
    labels = torch.tensor([False] * 16 + [True] * len(whole[::20]))
    assert (closeup.whole_garment(closeup.detector(model), seen, "auto") == labels).float().mean() >= 0.9


def test_training_photos_need_close_ups(tmp_path):
    data = load_retrieval_data(LUMA_TINY)
    data = dataclasses.replace(data, train=[r for r in data.train if fitting.photo_view(r) != "additional"])
    with pytest.raises(ValueError, match="additional"):
        fitting.training_photos(data, None)


def test_cli_names_weights_it_cannot_load(tmp_path):
    with pytest.raises(SystemExit, match="python -m training.closeup: .*nowhere"):
        fitting.main(["--weights", str(tmp_path / "nowhere")])


def test_balanced_weights_move_the_boundary_towards_the_larger_class():
    """A rare class weighted up is predicted more often: what makes 47 close-ups count against 600 photos."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1.0, 1.0, 20), rng.normal(-1.0, 1.0, 400)][:, None]
    y = np.r_[np.ones(20), np.zeros(400)]
    plain_w, plain_b = logistic_regression(x, y, 1e-3)
    bal_w, bal_b = logistic_regression(x, y, 1e-3, balanced_weights(y))
    predicted = lambda w, b: (x @ w + b > 0).sum()  # noqa: E731
    assert predicted(plain_w, plain_b) < predicted(bal_w, bal_b) <= 200
