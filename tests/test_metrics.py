"""recall_at_k by hand and the multi-similarity loss (the ranking itself: test_ranking.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PHONES_MINI, SHOP_MINI
from training.losses import multi_similarity_loss
from training.metrics import recall_at_k


def test_recall_at_k_hand_computed():
    gallery = ["a", "b", "c", "a", "d"]
    queries = ["a", "c", "d"]
    ranking = np.array([
        [0, 1, 2],  # query a: gallery[0] is "a" -> first hit at rank 1
        [1, 4, 2],  # query c: b, d, c -> first hit at rank 3
        [3, 4, 0],  # query d: a, d, a -> first hit at rank 2
    ])
    # R@1 = 1/3 (only a), R@2 = 2/3 (a, d), R@3 = 3/3
    res = recall_at_k(ranking, queries, gallery, (1, 2, 3))
    assert res == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": pytest.approx(1.0)}


def test_recall_with_a_query_that_never_hits():
    gallery = ["a", "b", "c"]
    queries = ["a", "z"]  # z is nowhere in the gallery
    ranking = np.array([[1, 0, 2], [0, 1, 2]])
    # a: first hit at rank 2; z: never -> R@1 = 0, R@2 = R@3 = 1/2
    res = recall_at_k(ranking, queries, gallery, (1, 2, 3))
    assert res == {"R@1": 0.0, "R@2": 0.5, "R@3": 0.5}


def test_recall_hit_at_rank_zero_is_not_a_miss():
    """argmax returns 0 both for a hit at rank 1 and for 'no hit at all'; the two must not be confused."""
    res = recall_at_k(np.array([[0, 1], [1, 0]]), ["a", "x"], ["a", "b"], (1, 2))
    assert res == {"R@1": 0.5, "R@2": 0.5}


def test_multi_similarity_loss_prefers_separating_similarities():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same = (labels[:, None] == labels[None, :]).float()
    good = 0.9 * same + 0.1 * (1 - same)  # positives similar, negatives not
    bad = 0.1 * same + 0.9 * (1 - same)  # inverted
    l_good, l_bad = multi_similarity_loss(good, labels), multi_similarity_loss(bad, labels)
    assert torch.isfinite(l_good) and torch.isfinite(l_bad)
    assert l_good.item() < l_bad.item()
    assert l_good.item() == pytest.approx(0.0, abs=1e-9), "nothing to mine once the margin is met"


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_multi_similarity_loss_and_gradient_hand_computed_on_embeddings():
    """Three unit embeddings, 0 and 1 one item, 2 another: cos(0,1) = 0.6, cos(0,2) = 0.8, cos(1,2) = 0.96.
    Anchors 0 and 1 each keep their positive (0.6 - 0.1 < their negative) and their negative (> 0.6 - 0.1);
    anchor 2 has no positive. The loss is the mean over the two anchors of
    log(1 + e^(-a (s+ - b))) / a + log(1 + e^(B (s- - b))) / B, and its derivative along a kept similarity is
    -sigmoid(-a (s+ - b)) for a positive, sigmoid(B (s- - b)) for a negative (halved by the mean); through
    sim = x x^T each embedding gets the others weighted by the derivatives of both its row and its column."""
    a, b, base = 2.0, 50.0, 0.5
    x0, x1, x2 = [1.0, 0.0], [0.6, 0.8], [0.8, 0.6]
    x = torch.tensor([x0, x1, x2], requires_grad=True)
    loss = multi_similarity_loss(x @ x.T, torch.tensor([0, 0, 1]))
    pos = math.log1p(math.exp(-a * (0.6 - base))) / a
    l0 = pos + math.log1p(math.exp(b * (0.8 - base))) / b
    l1 = pos + math.log1p(math.exp(b * (0.96 - base))) / b
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)

    loss.backward()
    d01 = d10 = -sigmoid(-a * (0.6 - base)) / 2  # anchor 0's positive 1, anchor 1's positive 0
    d02, d12 = sigmoid(b * (0.8 - base)) / 2, sigmoid(b * (0.96 - base)) / 2  # the anchors' negative 2
    expected = [[(d01 + d10) * u + d02 * w for u, w in zip(x1, x2)],
                [(d01 + d10) * u + d12 * w for u, w in zip(x0, x2)],
                [d02 * u + d12 * w for u, w in zip(x0, x1)]]
    assert x.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_multi_similarity_gradient_matches_finite_differences():
    """torch.autograd.gradcheck on float64 embeddings of four items of two images each. The mining keeps some pairs
    and drops others, every similarity at least 0.02 from its mining threshold: a step of 1e-3 moves a similarity
    by at most 2e-3, so the differences see the same pairs. The loss computes in float32, hence the tolerance
    (the gradients are of order 0.1 to 1)."""
    gen = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    x = F.normalize(torch.randn(8, 6, generator=gen, dtype=torch.float64), dim=1)
    sim = x @ x.T
    same, eye = labels[:, None] == labels[None, :], torch.eye(8, dtype=torch.bool)
    hardest_pos = torch.where(same & ~eye, sim, torch.inf).min(1, keepdim=True).values
    hardest_neg = torch.where(~same, sim, -torch.inf).max(1, keepdim=True).values
    neg_over = (sim + 0.1 - hardest_pos)[~same]  # > 0: a negative kept
    pos_under = (hardest_neg - sim + 0.1)[same & ~eye]  # > 0: a positive kept
    over = torch.cat([neg_over, pos_under])
    assert 0 < (over > 0).sum() < len(over), "some pairs are mined, some are not"
    assert over.abs().min() > 0.02, "a pair on the edge of the mining would make the differences jump"
    loss = lambda e: multi_similarity_loss(e @ e.T, labels)  # noqa: E731
    assert torch.autograd.gradcheck(loss, (x.requires_grad_(),), eps=1e-3, atol=2e-4, rtol=1e-3)


def test_multi_similarity_loss_without_positives_is_zero_with_graph():
    labels = torch.tensor([0, 1, 2])
    sim = torch.rand(3, 3, requires_grad=True)
    loss = multi_similarity_loss(sim, labels)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable, so a batch without pairs does not break training


def test_phone_photo_kind_scores_hand_computed():
    """bench.phone_photos: P@1 is the #1's category, P@20 the share of the top 20 of an accepted category."""
    from bench.phone_photos import TOP, chance_scores, kind_scores

    categories = ["Pants"] * 10 + ["Tees"] * 10 + ["Jackets"] * 10
    pants_first = np.arange(30)  # 10 Pants, then 10 Tees
    tees_first = np.r_[10:30, 0:10]  # 10 Tees, then 10 Jackets
    scores = kind_scores(np.stack([pants_first, tees_first, tees_first]), ["pants", "pants", "outwear"], categories)
    assert scores["pants"] == {"P@1": 0.5, f"P@{TOP}": 0.25, "photos": 2}
    assert scores["outwear"] == {"P@1": 0.0, f"P@{TOP}": 0.5, "photos": 1}
    assert scores["all"]["P@1"] == pytest.approx(1 / 3) and scores["all"][f"P@{TOP}"] == pytest.approx(1 / 3)
    assert "shorts" not in scores
    chance = chance_scores(["pants", "outwear"], categories)  # a third of the gallery is Pants, a third Jackets
    assert chance["all"]["P@1"] == pytest.approx(1 / 3) and chance["outwear"][f"P@{TOP}"] == pytest.approx(1 / 3)


def test_phone_photos_validation_side_searches_the_training_photos(tmp_path, capsys):
    """`--side validation`: phone photos against the training split as the shop, the side where settings may be
    chosen (full photos only, to keep it quick)."""
    import shutil

    from bench.phone_photos import chance_scores, main
    from mga.data import category_of, load_retrieval_data

    for kind in ("pants", "t-shirt"):
        (tmp_path / kind).mkdir()
        for photo in sorted((PHONES_MINI / "validation" / kind).glob("*.jpg"))[:2]:
            shutil.copy(photo, tmp_path / kind / photo.name)
    results = main(["--data", str(SHOP_MINI), "--side", "validation", "--photos", str(tmp_path), "--zoom-grid", "0"])
    train = load_retrieval_data(SHOP_MINI).train
    chance = chance_scores(["pants"] * 2 + ["t-shirt"] * 2, [category_of(r.path) for r in train])
    assert {k: pytest.approx(v) for k, v in results["chance (a random ranking)"].items()} == chance
    assert all(rows["all"]["photos"] == 4 for rows in results.values())
    assert f"against {len(train)} validation shop photos" in capsys.readouterr().out
