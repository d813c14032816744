"""mga.search and mga.explain: the engine the app and the CLI share, on a real index of real photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import LUMA_TINY, ROOT
from index_builder import build_index
from index_builder.pick_examples import EXPECTED, top_products
from mga.config import DEFAULT_INDEX_DIR
from mga.explain import OVERALL, WHOLE, moved_attention, overlay, score_maps, to_image_frame
from mga.imageio import ImageError
from mga.model import MGAModel
from mga.index_format import IndexMismatchError
from mga.search import SearchEngine, SearchResult
from mga.views import ZoomViews

EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, default_model):
    out = tmp_path_factory.mktemp("search") / "tiny-index"
    build_index(LUMA_TINY, out, model=default_model, workers=0, progress=False, log=lambda m: None,
                zoom=ZoomViews(grid=1))  # one window per image: the zoom-view code path at a fifth of the cost
    return SearchEngine.load(out, model=default_model)


def test_refuses_index_of_other_weights(engine, default_model):
    other = MGAModel(default_model.config).eval()  # same shape, random weights
    with pytest.raises(IndexMismatchError) as ex:
        SearchEngine.load(engine.index.path, model=other)
    msg = str(ex.value)
    assert default_model.fingerprint() in msg and other.fingerprint() in msg
    assert "python -m index_builder --gallery" in msg and str(engine.index.path) in msg


def test_results_sorted_unique_and_explained(engine, luma_photos):
    photo = luma_photos[0]
    w, h = Image.open(photo).size
    res = engine.search(photo, k=10)
    assert isinstance(res, SearchResult) and len(res.matches) == 10 and res.query_size == (w, h)
    ranked = [m.score + m.category_vote for m in res.matches]  # the ATA score plus its category's vote
    assert ranked == sorted(ranked, reverse=True)
    for category in {m.category for m in res.matches}:  # the vote never reorders one category
        scores = [m.score for m in res.matches if m.category == category]
        assert scores == sorted(scores, reverse=True)
    assert len({m.index for m in res.matches}) == 10 and [m.rank for m in res.matches] == list(range(1, 11))
    for m in res.matches:
        assert engine.index.read_image(m.index) and not os.path.isabs(m.image)
        q_heat = engine.query_heatmap(res, m, heatmap_max_side=None)
        assert q_heat.shape == (h, w) and q_heat.dtype == np.float32 and 0 <= q_heat.min() and q_heat.max() <= 1
        it = engine.index.items[m.index]
        m_heat = engine.match_heatmap(res, m, heatmap_max_side=None)
        assert m_heat.shape == (it["height"], it["width"]) and 0 <= m_heat.min() and m_heat.max() <= 1
        assert len(m.contributions) == engine.model.config.num_parts
        assert m.score == pytest.approx(m.global_contribution + m.anchor_contribution + sum(m.contributions),
                                         abs=1e-4)
        assert 0 < m.anchor_contribution <= engine.model.config.anchor + 1e-4  # the pretrained descriptor's share
    assert {"encode_ms", "search_ms", "rerank_ms", "total_ms"} <= set(res.timings)
    doc = json.loads(json.dumps(res.to_json()))
    assert doc[0]["rank"] == 1 and doc[0]["image"] == res.matches[0].image  # gallery-relative, never a server path
    assert not os.path.isabs(doc[0]["image"]) and engine.index.relative_path(res.matches[0].index) == doc[0]["image"]
    hh, ww = engine.query_heatmap(res, res.matches[0]).shape  # default: at most 1024 px, aspect kept
    assert max(hh, ww) == min(1024, max(w, h)) and abs(ww / hh - w / h) < 0.01


def test_category_filter_and_bad_query(engine, luma_photos):
    cat = engine.categories[0]
    res = engine.search(luma_photos[1], k=5, category=cat, explain=False)
    assert res.matches and all(m.category == cat for m in res.matches)
    assert all(engine.query_heatmap(res, m) is None and engine.match_heatmap(res, m) is None for m in res.matches)
    with pytest.raises(ValueError):
        engine.search(luma_photos[1], category="no such category")
    with pytest.raises(ImageError):
        engine.search(b"definitely not an image")
    assert engine.gallery_image(res.matches[0].index).size[0] > 0


def test_concurrent_searches_match_sequential(engine, luma_photos):
    queries = (luma_photos * 2)[:8]
    seq = [[(m.index, round(m.score, 5)) for m in engine.search(q, k=5).matches] for q in queries]
    with ThreadPoolExecutor(8) as pool:
        par = list(pool.map(lambda q: [(m.index, round(m.score, 5)) for m in engine.search(q, k=5).matches], queries))
    assert par == seq


def test_more_like_this_finds_itself_and_lists_the_others_without_it(engine):
    res = engine.search_encoding(engine.gallery_encoding(7), k=3)
    assert res.matches[0].index == 7
    own = res.matches[0].item_id
    others = engine.search_encoding(engine.gallery_encoding(7), k=3, products=True, exclude=own)
    assert len(others.matches) == 3 and own not in {m.item_id for m in others.matches}
    assert sum(m.confidence for m in others.matches) <= 1.0 + 1e-6  # one belief over the others


def test_explain_maths():
    """A hand-made pair: two cells, a 2-wide trained token and a 1-wide pretrained look, two parts."""
    k = 2
    cells = np.array([[0.6, 0.0, 0.2], [0.2, 0.4, 0.1]])  # each cell's share of this photo's global token
    other = np.array([0.5, 0.5, 1.0])  # the other photo's global token
    attn = np.array([[[1.0, 0.0]], [[0.25, 0.75]]])
    c = np.array([0.3, -0.1])
    maps = score_maps(cells, other, 2, 2.0, c, attn)
    assert maps.global_ == pytest.approx(np.array([[0.6, 0.6]]))  # 2 * (0.6*0.5 + 0), 2 * (0.2*0.5 + 0.4*0.5)
    assert maps.look == pytest.approx(np.array([[0.4, 0.2]]))  # 2 * 0.2 * 1, 2 * 0.1 * 1
    assert maps.parts == pytest.approx(np.array([[[0.3, 0.0]], [[-0.025, -0.075]]]))
    assert maps.term(WHOLE).sum() == pytest.approx(2 * cells.sum(0) @ other + c.sum())
    assert maps.term(OVERALL) == pytest.approx(np.array([[1.0, 0.8]])) and maps.term(1).sum() == pytest.approx(-0.1)
    pi = np.eye(k)[[1, 0]]  # query part 0 matched candidate part 1
    assert moved_attention(pi, attn)[0].tolist() == attn[1].tolist()
    qmap = np.zeros((4, 4), np.float32)
    qmap[0, 0] = 1
    frame = to_image_frame(qmap, 300, 150, 96)  # wide image: letterbox pads top and bottom
    assert frame.shape == (150, 300) and frame.min() == 0 and frame.max() == 1
    assert frame[:40, :80].mean() > frame[-40:, -80:].mean()  # the hot corner stays top-left
    img = Image.new("RGB", (300, 150), "white")
    assert overlay(img, frame).size == (300, 150)
    assert overlay(img, np.zeros((10, 10))).size == (300, 150)


def test_shipped_demo_index_matches_default_weights(default_model):
    """assets/demo-index must be rebuilt whenever assets/mga-default changes (the command is in the message)."""
    engine = SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model)
    assert engine.info["images"] >= 150 and len(engine.categories) >= 7
    examples = sorted((ROOT / "assets" / "examples").glob("*.jpg"))
    assert 6 <= len(examples) <= 8
    res = engine.search(examples[0], k=5)
    assert len(res.matches) == 5 and all(engine.index.read_image(m.index) for m in res.matches)


def test_examples_give_the_results_recorded_when_they_were_chosen(default_model):
    """Behaviour kept across refactors: each example finds the products it found when it was picked
    (index_builder.pick_examples recorded them), with the same scores, in the same order but for float ties."""
    engine = SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model)
    expected = json.loads(EXPECTED.read_text())
    assert expected["fingerprint"] == engine.fingerprint, "new weights: run python -m index_builder.pick_examples"
    assert sorted(expected["results"]) == sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    for name, want in expected["results"].items():
        got = top_products(engine, EXAMPLES / name)
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-4), name
        for i, (g, w) in enumerate(zip(got, want)):
            tie = any(abs(want[j]["score"] - w["score"]) < 1e-4 for j in (i - 1, i + 1) if 0 <= j < len(want))
            assert g["item_id"] == w["item_id"] or tie, (name, i, got, want)


def assert_same_ranking_up_to_ties(ix, q, got, ref, tol=1e-5):
    """Two top-m lists (images, scores, rows) agree where floats allow: the same scores in order, each image
    scored as its exact best view through the row returned for it, and the same images wherever no other
    image's score is within `tol` (FAISS and numpy sum in different orders, so near-ties may swap)."""
    images, scores, rows = got
    ref_images, ref_scores, _ = ref
    assert scores == pytest.approx(ref_scores, abs=tol)
    assert len(set(images.tolist())) == len(images)
    everything = np.arange(len(ix))
    all_images, all_scores, _ = ix._exact(q[None], everything, len(ix))
    exact = dict(zip(all_images.tolist(), all_scores.tolist()))
    assert [exact[i] for i in images.tolist()] == pytest.approx(scores.tolist(), abs=tol)
    assert (np.asarray(ix.embeddings[np.sort(rows)], dtype=np.float32) @ q)[np.argsort(np.argsort(rows))] \
        == pytest.approx(scores, abs=tol)
    cut = float(ref_scores[-1]) + tol
    assert {i for i, s in zip(images.tolist(), scores.tolist()) if s > cut} == \
        {i for i, s in zip(ref_images.tolist(), ref_scores.tolist()) if s > cut}


def test_flat_index_ranks_images_by_their_best_view_exactly(default_model):
    """A flat index takes each image's score from FAISS's first returned view, without re-scoring: it must equal
    scoring every view of every image (the demo index has ~14 views per image, so views cluster by image)."""
    ix = SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model).index
    assert ix.index_type == "flat" and ix.views > 10 * len(ix)
    everything = np.arange(len(ix))
    for row in range(0, ix.views, 397):
        q = np.array(ix.embeddings[row], dtype=np.float32)
        for m, category in ((100, None), (10, None), (10, ix.items[ix.owner[row]]["category"])):
            got = ix.coarse_search(q, m, category)
            pool = everything if category is None else ix.category_images(category)
            assert_same_ranking_up_to_ties(ix, q, got, ix._exact(q[None], pool, m))


def test_ranking_comparison_allows_only_near_ties_to_swap(default_model):
    """The comparison above is no blank cheque: swapping two images whose scores differ fails it."""
    ix = SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model).index
    q = np.array(ix.embeddings[0], dtype=np.float32)
    images, scores, rows = ix._exact(q[None], np.arange(len(ix)), 20)
    gap = int(np.argmax(scores[:-1] - scores[1:] > 1e-3))
    swapped = images.copy()
    swapped[[gap, gap + 1]] = swapped[[gap + 1, gap]]
    with pytest.raises(AssertionError):
        assert_same_ranking_up_to_ties(ix, q, (swapped, scores, rows), (images, scores, rows))
    assert_same_ranking_up_to_ties(ix, q, (images, scores, rows), (images, scores, rows))


def test_cli_json(engine, luma_photos):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "mga.search", "--index", str(engine.index.path), "--image",
                        str(luma_photos[2]), "-k", "3", "--json"], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["matches"]) == 3 and out["matches"][0]["rank"] == 1


def test_product_results_list_each_product_once_at_its_best_photo(engine, luma_photos):
    photos = engine.search(luma_photos[0], k=30, explain=False)
    products = engine.search(luma_photos[0], k=10, explain=False, products=True)
    ids = [m.item_id for m in products.matches]
    assert len(set(ids)) == len(ids) == 10
    best_photo = {}
    for m in photos.matches:  # the photo ranking, first photo of each product
        best_photo.setdefault(m.item_id, m)
    expected = list(best_photo)[:10]
    assert ids == expected[:len(ids)] or len(best_photo) < 10
    for m in products.matches:
        if m.item_id in best_photo:
            assert m.image == best_photo[m.item_id].image and m.score == pytest.approx(best_photo[m.item_id].score)
        assert m.photos == sum(it["item_id"] == m.item_id for it in engine.index.items)
    scores = [m.score for m in products.matches]  # each product's lead is over the best other by score, vote or not
    for m in products.matches:
        assert m.lead == pytest.approx(m.score - max(s for o, s in zip(products.matches, scores) if o is not m))


@pytest.mark.slow  # encodes every match's view once more
def test_every_term_of_a_match_spreads_over_both_photos_summing_to_its_score(engine, luma_photos):
    """The whole-score map: on the query and on the view that matched (a close-up window too), the cells of all
    terms sum to the score, and each term's cells to that term (the pretrained look, the global token, each part)."""
    seen_window = False
    photos = [Image.open(p).convert("RGB") for p in luma_photos[:3]]
    close_ups = [p.crop((p.width // 4, p.height // 5, 3 * p.width // 4, p.height // 2)) for p in photos]
    for photo in photos + close_ups:
        res = engine.search(photo, k=5)
        for m in res.matches:
            seen_window |= tuple(m.box) != (0.0, 0.0, 1.0, 1.0)
            for side in (engine.query_maps(res, m), engine.match_maps(res, m)):
                assert side.term(WHOLE).sum() == pytest.approx(m.score, abs=1e-4)
                totals = side.totals()
                assert totals["look"] == pytest.approx(m.anchor_contribution, abs=1e-4)
                assert totals["global"] == pytest.approx(m.global_contribution, abs=1e-4)
                assert totals["parts"] == pytest.approx(m.contributions, abs=1e-4)
    assert seen_window, "no match through a close-up window among these queries"


def test_a_match_opened_after_its_search_left_the_kept_store_is_explained_from_its_photo(engine, luma_photos):
    """A search keeps its query's cells in a bounded store for its matches' explanations; once later searches have
    pushed it out, the query photo encoded again gives the same map, still summing to the score."""
    photo = Image.open(luma_photos[0]).convert("RGB")
    res = engine.search(photo, k=3)
    kept = engine.query_maps(res, res.matches[0])  # from the store, with no photo to read
    assert kept is not None and kept.term(WHOLE).sum() == pytest.approx(res.matches[0].score, abs=1e-4)
    for other in (luma_photos[1:] * engine.kept.size)[:engine.kept.size]:
        engine.search(other, k=1)
    assert engine.kept.cells(res.query_id) is None and len(engine.kept) == engine.kept.size  # bounded
    m = res.matches[1]
    assert engine.query_maps(res, m) is None  # gone, and nothing to encode again
    again = engine.query_maps(res, m, photo=lambda: photo)
    assert again.term(WHOLE).sum() == pytest.approx(m.score, abs=1e-4)
    assert again.totals()["parts"] == pytest.approx(m.contributions, abs=1e-4)
    first = engine.query_maps(res, res.matches[0])  # computed once per match: the kept store's map stays
    assert first is kept
    fresh = engine.search(photo, k=3)  # the same photo kept anew: the encoded-again map is the same map
    want = engine.query_maps(fresh, next(x for x in fresh.matches if x.index == m.index))
    assert np.abs(again.term(WHOLE) - want.term(WHOLE)).max() < 1e-5
