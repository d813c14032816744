"""mga.confidence: the calibrator's fit, its AUROC, and how a search's results get their probability."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from bench.confidence import GARMENT, OTHER_KIND, SHOP, plot_confidence
from mga.confidence import auroc, brier, calibration_error, features, fit, probability, reliability, set_confidence


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
    lead: float | None = None
    confidence: float | None = None


def test_each_result_is_weighed_against_the_best_other_product():
    cal = {"weights": [0.0, 10.0], "bias": 0.0}  # only the lead over the best other product counts
    matches = [M("b", 0.6), M("a", 0.8), M("c", 0.5)]  # b first, as a category vote may order them
    set_confidence(matches, [("a", 0.8), ("b", 0.6)], cal)
    assert [m.lead for m in matches] == pytest.approx([-0.2, 0.2, -0.3])  # each against the best other by score
    assert matches[1].confidence == pytest.approx(probability(cal, features(0.8, 0.2)))
    assert matches[1].confidence > 0.5 > matches[0].confidence > matches[2].confidence
    untouched = [M("a", 0.8)]
    set_confidence(untouched, [("a", 0.8)], {})  # weights without a calibration: a lead, no probability
    assert untouched[0].lead == pytest.approx(0.8) and untouched[0].confidence is None


def test_calibration_error_and_brier_tell_a_calibrated_probability_from_an_overconfident_one():
    right = np.array([True] * 7 + [False] * 3 + [True] * 2 + [False] * 8)
    calibrated = np.r_[np.full(10, 0.7), np.full(10, 0.2)]  # 7 of 10 right at 0.7, 2 of 10 at 0.2
    overconfident = np.r_[np.full(10, 0.99), np.full(10, 0.01)]
    assert np.asarray(reliability(calibrated, right)) == pytest.approx(np.array([(0.2, 0.2, 0.5), (0.7, 0.7, 0.5)]))
    assert calibration_error(calibrated, right) == pytest.approx(0.0, abs=1e-12)
    assert calibration_error(overconfident, right) == pytest.approx(0.5 * 0.29 + 0.5 * 0.19)
    assert brier(right.astype(float), right) == 0.0
    assert brier(calibrated, right) < brier(overconfident, right)


def test_the_confidence_plot_is_written_whole(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=60)
    group = np.repeat([SHOP, GARMENT, OTHER_KIND], 20)
    correct = (group == SHOP) & (rng.uniform(size=60) < prob)
    path = tmp_path / "confidence.png"
    plot_confidence(prob, correct, group, path)
    with Image.open(path) as im:
        assert im.width > 2 * im.height  # two panels side by side
    assert [f.name for f in tmp_path.iterdir()] == ["confidence.png"]  # written atomically, nothing left over
