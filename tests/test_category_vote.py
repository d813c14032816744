"""mga.category_vote: the best results vote on the query's kind of garment, by hand and on a real phone photo."""
from __future__ import annotations

import numpy as np

from conftest import DISTRACTORS
from mga.category_vote import category_vote, vote_order
from mga.config import DEFAULT_INDEX_DIR
from mga.search import SearchEngine


def test_the_kind_most_results_agree_on_moves_up_and_nothing_else_changes():
    scores = np.array([0.611, 0.576, 0.575, 0.574, 0.571])
    kinds = ["tank", "pants", "jacket", "pants", "pants"]
    order = vote_order(scores, kinds, weight=1.0)
    assert kinds[order[0]] == "pants" and order.tolist()[:3] == [1, 3, 4]  # pants first, in their own order
    assert vote_order(scores, kinds, weight=0.0).tolist() == [0, 1, 2, 3, 4]  # off: the scores' order
    assert vote_order(scores, ["pants"] * 5, weight=1.0).tolist() == [0, 1, 2, 3, 4]  # one kind: unchanged
    voted = category_vote(scores, kinds, weight=1.0, top=5, temperature=1e9)  # equal votes: the shares are counts
    np.testing.assert_allclose(voted - scores, [0.2, 0.6, 0.2, 0.6, 0.6])
    only_best = category_vote(scores, kinds, weight=1.0, top=1)  # a kind outside the top gets nothing
    np.testing.assert_allclose(only_best - scores, [1, 0, 0, 0, 0])


def test_a_phone_photo_of_trousers_gets_more_trousers_at_the_top(default_model):
    """A real phone photo of patterned trousers (distractors/test) against the demo shop: its ATA top 5 mixes a
    tank top and a jacket in; with the vote more of the top 5 are trousers, the kind the other results agree on."""
    engine = SearchEngine.load(DEFAULT_INDEX_DIR, model=default_model)
    photo = sorted((DISTRACTORS / "test" / "pants").glob("*.jpg"))[0]
    top = {w: engine.search(photo, k=5, explain=False, products=True, category_vote=w).matches for w in (0.0, 0.1)}
    pants = {w: sum(m.category == "Pants" for m in matches) for w, matches in top.items()}
    assert pants[0.1] > pants[0.0], pants
    assert all(m.category_vote == 0 for m in top[0.0]) and max(m.category_vote for m in top[0.1]) > 0
