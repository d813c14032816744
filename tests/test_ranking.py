"""mga.ranking: the one ranking pipeline (coarse search, ATA, the category vote) against brute force on the real
demo index, and evaluation (training.evaluate.Shop) reading the very ranking the app's searches show."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import LUMA_TINY
from mga.category_vote import vote_order
from mga.config import DEFAULT_INDEX_DIR
from mga.data import load_retrieval_data
from training.evaluate import Shop, encode_records, recall
from training.metrics import recall_at_k
from mga.search import SearchEngine
from mga.views import ZoomViews


@pytest.fixture(scope="module")
def engine(default_model) -> SearchEngine:
    return SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model)


@pytest.fixture(scope="module")
def queries(engine):
    """Encodings of a few gallery photos' zoom views: real encodings that are not any image's full photo."""
    ix = engine.index
    return ix.encoding(ix.first_row[[3, 40, 77, 120]] + 2)


def coarse_best(engine, q) -> np.ndarray:
    """Each image's best-view coarse score, by brute force over every view."""
    ix = engine.index
    scores = np.asarray(ix.embeddings, dtype=np.float32) @ q.embedding[0].float().numpy()
    return np.array([scores[ix.owner == i].max() for i in range(len(ix))])


def ata_best(engine, q, image: int, full_only: bool = False) -> float:
    """Image's ATA score as its best view (or its full photo), by brute force."""
    ix = engine.index
    rows = ix.first_row[[image]] if full_only else np.flatnonzero(ix.owner == image)
    with torch.inference_mode():
        al = engine.model.align_tokens(q.global_, q.parts, *ix.tokens(rows))
    return float(al.scores[0].max())


def test_without_ata_the_images_keep_their_exact_coarse_order(engine, queries):
    for i in range(len(queries)):
        q = queries[i:i + 1]
        r = engine.rank(q, 30, rerank_top=0, views="all", category_vote=0)
        assert r.order.tolist() == list(range(30)) and not r.whole
        exact = coarse_best(engine, q)
        np.testing.assert_allclose(r.coarse, exact[r.images], atol=1e-5)
        assert exact[r.images].min() >= np.sort(exact)[-30] - 1e-5  # the top 30 by their best view


def test_ata_reorders_exactly_the_coarse_top_m_and_leaves_the_rest(engine, queries):
    m = 12
    for i in range(len(queries)):
        q = queries[i:i + 1]
        coarse = engine.rank(q, 40, rerank_top=0, views="all", category_vote=0).ranked_images()
        fine = engine.rank(q, 40, rerank_top=m, views="all", category_vote=0)
        head = fine.ranked_images()[:m]
        assert set(head.tolist()) == set(coarse[:m].tolist())
        assert fine.ranked_images()[m:].tolist() == coarse[m:].tolist()
        brute = [ata_best(engine, q, int(j)) for j in head]
        np.testing.assert_allclose([fine.score(int(j)) for j in fine.order[:m]], brute, atol=1e-5)
        assert all(a >= b - 1e-6 for a, b in zip(brute, brute[1:])), "the head is in ATA order"


def test_more_candidates_than_images_ranks_every_image_by_ata(engine, queries):
    q = queries[:1]
    r = engine.rank(q, 10, rerank_top=1000, views="all", category_vote=0)
    assert sorted(r.images.tolist()) == list(range(len(engine.index)))
    scores = [r.score(int(j)) for j in r.order]
    assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:]))


def test_a_whole_garment_query_is_matched_against_full_photos_only(engine, queries):
    q = queries[1:2]
    r = engine.rank(q, 10, rerank_top=10, views="full", category_vote=0)
    assert r.whole and set(r.rows[:10].tolist()) <= set(engine.index.first_row.tolist())
    for j in r.order[:10]:
        assert r.score(int(j)) == pytest.approx(ata_best(engine, q, int(r.images[j]), full_only=True), abs=1e-5)


def test_the_category_vote_orders_the_head(engine, queries):
    q = queries[2:3]
    r = engine.rank(q, 20, rerank_top=20, views="all", category_vote=0.1)
    kinds = engine.index.category_keys[r.images[:20]]
    assert r.order[:20].tolist() == vote_order(r.best_ata[:20], kinds, 0.1).tolist()
    assert np.any(r.bonus > 0)


def test_evaluation_reads_the_ranking_that_the_app_shows(engine, queries):
    """Shop.rank gives, query by query, the images in the order a search lists them."""
    shop = Shop(engine)
    order, whole = shop.rank(queries, 10)
    for i in range(len(queries)):
        res = engine.search_encoding(queries[i:i + 1], k=10)
        assert [m.index for m in res.matches] == order[i].tolist() and res.whole_garment == whole[i]


def test_recall_of_a_data_set_indexed_as_a_shop_is_the_search_results(default_model):
    data = load_retrieval_data(LUMA_TINY)
    wanted = {r.item_id for r in data.query[:10]}
    gallery = {r.path: r for r in [r for r in data.gallery if r.item_id in wanted] + data.gallery[:12]}
    data = dataclasses.replace(data, query=data.query[:10], gallery=list(gallery.values()))
    q = encode_records(default_model, data.root, data.query)
    with Shop.indexed(default_model, data.root, data.gallery, ZoomViews(grid=0)) as shop:
        assert sorted(shop.item_ids) == sorted(r.item_id for r in data.gallery)
        got = recall(shop, data, q)
        tops = [shop.engine.search_encoding(q[i:i + 1], k=5).matches for i in range(len(q))]
    truth = [r.item_id for r in data.query]
    assert got["R@1"] == pytest.approx(np.mean([m[0].item_id == t for m, t in zip(tops, truth)]))
    assert got["R@5"] == pytest.approx(np.mean([t in {x.item_id for x in m} for m, t in zip(tops, truth)]))
    assert got["R@1"] == recall_at_k(np.array([[x.index for x in m] for m in tops]), truth, shop.item_ids,
                                     (1,))["R@1"]
    assert 0 < got["R@1"] <= 1
