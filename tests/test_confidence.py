"""mga.confidence: the calibrator's fit, its AUROC, and how a search's results get their probability."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from bench.confidence import GARMENT, LEGACY, OTHER_KIND, SHOP, Ranking, measure, photo_kinds
from bench.confidence_plot import plot_confidence
from mga.confidence import (CLOSE, check_calibration, parameters, probability, product_probabilities, set_confidence,
                            softmax_calibration)
from training.calibration import auroc, brier, calibration_error, fit, fit_products, log_likelihoods, reliability


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


SOFTMAX = softmax_calibration(temperature=0.02, none_score=0.75, none_temperature=0.05)


@dataclass
class M:
    item_id: str
    score: float
    lead: float | None = None
    confidence: float | None = None
    close_to_next: bool = False


def test_the_products_probabilities_are_one_belief():
    values = np.array([0.82, 0.81, 0.70, 0.60])
    p = product_probabilities(values, SOFTMAX)
    assert p.sum() < 1 and np.all(np.diff(p) <= 0), "at most 1 in all, never rising down the ranking"
    assert 0.3 < p[1] < 0.5 and p[0] + p[1] < 1, "two products close in value share the belief, not both likely"
    none = 1 - p.sum()
    lower = product_probabilities(values - 0.1, SOFTMAX)
    assert 1 - lower.sum() > none, "the same leads at a lower best value: more is left for none of these"
    assert product_probabilities(values[::-1], SOFTMAX) == pytest.approx(p[::-1]), "any order in, the same order out"
    assert product_probabilities([0.9], SOFTMAX)[0] == pytest.approx(1 / (1 + np.exp((0.75 - 0.9) / 0.05)))
    leading = softmax_calibration(0.02, 0.75, 0.05, none_lead=0.5)
    far, close = product_probabilities([0.8, 0.7], leading), product_probabilities([0.8, 0.79], leading)
    u = (0.75 - 0.8) / 0.05 - 0.5 * 0.1 / 0.02
    assert far[0] == pytest.approx(1 / (1 + np.exp(u) + np.exp(-0.1 / 0.02)))
    assert 1 - far.sum() < 1 - product_probabilities([0.8, 0.7], SOFTMAX).sum(), "a clear lead: less for none"
    assert 1 - close.sum() > 1 - far.sum()
    assert len(product_probabilities([], SOFTMAX)) == 0


def test_an_earlier_logistic_calibration_is_read_as_the_softmax_with_its_weights():
    t, s0, t0, w = parameters(LEGACY)
    w_score, w_lead = LEGACY["weights"]
    assert (t, s0, t0, w) == pytest.approx((1 / w_lead, -LEGACY["bias"] / w_score, 1 / w_score, 0))
    assert parameters(SOFTMAX) == pytest.approx((0.02, 0.75, 0.05, 0))
    # the score's weight and the bias set "none of these", the lead's weight the other product's term
    p = product_probabilities([0.8, 0.75], LEGACY)[0]
    assert 1 / p == pytest.approx(1 + np.exp(-(w_score * 0.8 + LEGACY["bias"])) + np.exp(-w_lead * 0.05))
    p = product_probabilities([0.8, 0.78], LEGACY)
    assert p.sum() <= 1 and p[0] >= p[1]
    check_calibration(LEGACY)
    check_calibration(SOFTMAX)
    check_calibration({})


@pytest.mark.parametrize("bad, says", [
    ({**SOFTMAX, "model": "other"}, "model"), ({**SOFTMAX, "weights": [20.0, 0.0]}, "above 0"),
    ({**SOFTMAX, "bias": float("nan")}, "bias"), ({**SOFTMAX, "none_lead": -1}, "none_lead"),
    ({**SOFTMAX, "none_lead": True}, "none_lead"), ({k: v for k, v in SOFTMAX.items() if k != "weights"}, "weights"),
    ({**LEGACY, "weights": [1.0, -2.0]}, "weights"), ({**LEGACY, "bias": "x"}, "bias"), ([1, 2], "JSON object")])
def test_a_calibration_that_cannot_be_applied_is_refused(bad, says):
    with pytest.raises(ValueError, match=says):
        check_calibration(bad)


def test_fit_recovers_a_known_softmax_over_products():
    rng = np.random.default_rng(0)
    true = softmax_calibration(0.03, 0.7, 0.04, none_lead=0.5)
    values, truth = [], []
    for _ in range(4000):
        v = rng.uniform(0.55, 0.95) - np.cumsum(np.r_[0, rng.exponential(0.03, size=rng.integers(1, 30))])
        p = product_probabilities(v, true)
        pick = rng.choice(len(v) + 1, p=np.r_[p, 1 - p.sum()])
        values.append(v)
        truth.append(int(pick) if pick < len(v) else -1)
    cal = fit_products(values, truth)
    check_calibration(cal)
    t, s0, t0, w = parameters(cal)
    assert t == pytest.approx(0.03, rel=0.15) and s0 == pytest.approx(0.7, abs=0.02)
    assert t0 == pytest.approx(0.04, rel=0.15) and w == pytest.approx(0.5, abs=0.15)
    assert log_likelihoods(values, truth, cal).mean() >= log_likelihoods(values, truth, true).mean() - 1e-6


def test_each_listed_product_gets_its_share_of_one_belief():
    matches = [M("b", 0.78), M("a", 0.80), M("c", 0.60)]  # b first: a category vote lifted it
    products = [("b", 0.78, 0.83), ("a", 0.80, 0.82), ("c", 0.60, 0.65), ("d", 0.55, 0.55)]
    set_confidence(matches, products, SOFTMAX)
    p = product_probabilities([v for _, _, v in products], SOFTMAX)
    assert [m.confidence for m in matches] == pytest.approx(p[:3].tolist())
    assert matches[0].confidence >= matches[1].confidence >= matches[2].confidence, "read as the ranking reads"
    assert sum(m.confidence for m in matches) <= 1
    assert [m.lead for m in matches] == pytest.approx([-0.02, 0.02, -0.2]), "leads: against the best other by score"
    assert matches[0].close_to_next and matches[1].confidence >= CLOSE * matches[0].confidence
    assert not matches[1].close_to_next and not matches[2].close_to_next
    untouched = [M("a", 0.8)]
    set_confidence(untouched, [("a", 0.8, 0.8)], {})  # weights without a calibration: a lead, no probability
    assert untouched[0].lead == pytest.approx(0.8) and untouched[0].confidence is None
    assert not untouched[0].close_to_next


def test_the_bench_counts_searches_whose_probabilities_are_no_one_belief():
    near = Ranking(["a", "b", "c"], np.array([0.84, 0.83, 0.5]), np.array([0.84, 0.83, 0.5]))
    voted = Ranking(["b", "a"], np.array([0.70, 0.78]), np.array([0.84, 0.78]))  # the vote put b over a better a
    garment = Ranking(["c", "d"], np.array([0.6, 0.55]), np.array([0.6, 0.55]))
    hat = Ranking(["d"], np.array([0.4]), np.array([0.4]))
    ranked, correct = [near, voted, garment, hat], np.array([True, False, False, False])
    group = np.array([SHOP, SHOP, GARMENT, OTHER_KIND])
    old, new = measure(ranked, correct, group, LEGACY), measure(ranked, correct, group, SOFTMAX)
    assert old["sums_over_1"] == old["two_likely"] == 0.25, "each result's own logistic: 0.84 and 0.83 both likely"
    assert old["rises_down_the_ranking"] == 0.25, "the logistic reads the score the vote reordered"
    assert new["sums_over_1"] == new["rises_down_the_ranking"] == new["two_likely"] == 0.0
    assert new["auroc_garments"] == new["auroc"] == 1.0 and new["sure"] == 0


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
    plot_confidence(prob, correct, photo_kinds(correct, group), path)
    with Image.open(path) as im:
        assert im.width > 2 * im.height  # two panels side by side
    assert [f.name for f in tmp_path.iterdir()] == ["confidence.png"]  # written atomically, nothing left over
