"""The metric losses against hand-computed cases (formulas written out here, not called from the code)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import ProxyAnchorLoss, multi_similarity_loss, multi_similarity_masked


def test_multi_similarity_hand_computed():
    # 3 images: 0 and 1 are one item, 2 another. sim(0,1)=0.6, sim(0,2)=0.55, sim(1,2)=0.2
    sim = torch.tensor([[1.0, 0.6, 0.55], [0.6, 1.0, 0.2], [0.55, 0.2, 1.0]])
    labels = torch.tensor([0, 0, 1])
    a, b, base = 2.0, 50.0, 0.5
    # anchor 0: negative 0.55 is kept (0.55 + 0.1 > 0.6); positive 0.6 is kept (0.6 - 0.1 < 0.55)
    l0 = math.log1p(math.exp(-a * (0.6 - base))) / a + math.log1p(math.exp(b * (0.55 - base))) / b
    # anchor 1: negative 0.2 is not hard (0.2 + 0.1 < 0.6): no negatives left, the anchor is skipped
    # anchor 2: no positive at all, skipped
    assert multi_similarity_loss(sim, labels).item() == pytest.approx(l0, rel=1e-6)


def test_multi_similarity_without_pairs_is_zero_with_a_gradient():
    x = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    loss = multi_similarity_loss(x @ x.T, torch.tensor([0, 1, 2, 3]))  # no positives anywhere
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_multi_similarity_prefers_separated_items():
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    bad = torch.tensor([[1.0, 0], [0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # each image nearer the other item
    good, bad = F.normalize(good, dim=-1), F.normalize(bad, dim=-1)
    assert multi_similarity_loss(good @ good.T, labels) < multi_similarity_loss(bad @ bad.T, labels)


def test_proxy_anchor_hand_computed():
    loss = ProxyAnchorLoss(num_classes=2, dim=2, alpha=32.0, delta=0.1)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # normalised inside: e_x and e_y
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cos with the proxies: (1, 0) and (0.6, 0.8)
    labels = torch.tensor([0, 0])
    a, d = 32.0, 0.1
    # proxy 0 has both images as positives; proxy 1 has none (left out of the positive mean)
    pos = math.log1p(math.exp(-a * (1.0 - d)) + math.exp(-a * (0.6 - d)))
    # negatives: proxy 1 against both images; proxy 0 has none
    neg = math.log1p(math.exp(a * (0.0 + d)) + math.exp(a * (0.8 + d))) / 2
    assert loss(emb, labels).item() == pytest.approx(pos + neg, rel=1e-5)


def test_proxy_anchor_moves_proxies_towards_their_items():
    torch.manual_seed(0)
    loss = ProxyAnchorLoss(num_classes=3, dim=16)
    emb = F.normalize(torch.randn(3, 16), dim=-1).repeat_interleave(2, dim=0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    opt = torch.optim.SGD(loss.parameters(), lr=0.05)
    before = loss(emb, labels).item()
    for _ in range(50):
        opt.zero_grad()
        loss(emb, labels).backward()
        opt.step()
    assert loss(emb, labels).item() < 0.5 * before
    nearest = (F.normalize(emb, dim=-1) @ F.normalize(loss.proxies, dim=-1).T).argmax(1)
    assert torch.equal(nearest, labels)


def test_multi_similarity_masked_compares_anchors_with_another_set():
    # 2 anchors (phone photos) against 3 shop photos; anchor 0's positive is shop 0, anchor 1 has none in the batch
    sim = torch.tensor([[0.6, 0.55, 0.1], [0.3, 0.9, 0.2]])
    pos = torch.tensor([[True, False, False], [False, False, False]])
    a, b, base = 2.0, 50.0, 0.5
    l0 = math.log1p(math.exp(-a * (0.6 - base))) / a + math.log1p(math.exp(b * (0.55 - base))) / b
    assert multi_similarity_masked(sim, pos, ~pos).item() == pytest.approx(l0, rel=1e-6)
