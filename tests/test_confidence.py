"""mga.confidence: the calibrator's fit, its AUROC, and how a search's results get their probability."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mga.confidence import auroc, features, fit, probability, set_confidence


def test_auroc_by_hand():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.9], [0.5, 0.1]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)  # a tie counts half


def test_fit_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    true_w, true_b = np.array([2.0, -1.0]), 0.5
    y = (rng.random(4000) < 1 / (1 + np.exp(-(x @ true_w + true_b)))).astype(float)
    cal = fit(x, y)
    assert np.allclose(cal["weights"], true_w, atol=0.2) and abs(cal["bias"] - true_b) < 0.2
    assert probability(cal, np.array([0.0, 0.0])) == pytest.approx(1 / (1 + np.exp(-cal["bias"])))


@dataclass
class M:
    item_id: str
    score: float
    confidence: float | None = None


def test_each_result_is_weighed_against_the_best_other_product():
    cal = {"weights": [0.0, 10.0], "bias": 0.0}  # only the lead over the best other product counts
    matches = [M("a", 0.8), M("b", 0.6), M("c", 0.5)]
    set_confidence(matches, [("a", 0.8), ("b", 0.6)], cal)
    assert matches[0].confidence == pytest.approx(probability(cal, features(0.8, 0.6)))  # leads b by 0.2
    assert matches[1].confidence == pytest.approx(probability(cal, features(0.6, 0.8)))  # trails a by 0.2
    assert matches[0].confidence > 0.5 > matches[1].confidence > matches[2].confidence
    untouched = [M("a", 0.8)]
    set_confidence(untouched, [("a", 0.8)], {})  # weights without a calibration: no probability
    assert untouched[0].confidence is None
