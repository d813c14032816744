"""How sure a search is that a result is the query's product: a calibrated probability, not a raw score.

A raw ATA score says little on its own: a hat photo's best match scores about what a correct match of a cluttered
phone photo scores. What tells them apart is how the score stands against the other products' (a product that is
in the gallery stands out from the rest; a photo of something the shop does not sell matches many products about
equally). `features` turns a result's score and the best score of any other product into the calibrator's input;
a logistic regression fitted on photos outside the test split (`python -m bench.confidence --fit`) maps it to the
probability that the result is the same product. The fit is stored with the weights (`MGAConfig.confidence`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

FEATURES = ("score", "margin")  # the result's score; its lead over the best other product (negative below #1)
CONFIDENT = 0.5  # the probability from which a result counts as the query's product: below, "no confident match"


def lead(score: float, best_other: float | None) -> float:
    """How far a result's score stands above the best other product's (negative below it; the score itself when
    the ranking has no other product)."""
    return score - (best_other if best_other is not None else 0.0)


def features(score: float, margin: float) -> np.ndarray:
    """The calibrator's input for one result: its score and its `lead`."""
    return np.array([score, margin], dtype=np.float64)


def probability(calibration: dict, x: np.ndarray) -> float:
    """P(same product) for one feature vector under a fitted calibration."""
    z = float(np.dot(calibration["weights"], x) + calibration["bias"])
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def check_calibration(calibration: Any) -> None:
    """Refuse a stored calibration (MGAConfig.confidence) that `probability` could not apply to every result: it is
    empty (none fitted), or it holds one finite weight per feature of FEATURES and a finite bias, and the features
    it names, if it names them, are FEATURES. Raises ValueError naming the field."""
    if not calibration:
        return
    field = "MGAConfig.confidence"
    if not isinstance(calibration, dict):
        raise ValueError(f"{field} must be a JSON object, not a {type(calibration).__name__}")
    check_numbers(calibration.get("weights"), f"{field}.weights", len(FEATURES), f"one per feature {FEATURES}")
    check_number(calibration.get("bias"), f"{field}.bias")
    named = calibration.get("features", list(FEATURES))
    if named != list(FEATURES):
        raise ValueError(f"{field}.features = {str(named)[:80]}: this version computes {list(FEATURES)}")


def check_numbers(values: Any, field: str, length: int, why: str) -> None:
    """Raise ValueError naming `field` unless `values` is a list of exactly `length` finite numbers (`why` says
    why that many)."""
    if not isinstance(values, list):
        raise ValueError(f"{field} must be a list of {length} numbers ({why}), not {type(values).__name__}")
    if len(values) != length:
        raise ValueError(f"{field} has {len(values)} numbers; it must have {length} ({why})")
    for i, v in enumerate(values):
        check_number(v, f"{field}[{i}]")


def check_number(value: Any, field: str) -> None:
    if not is_finite_number(value):
        raise ValueError(f"{field} = {str(value)[:40]}: must be a finite number")


def is_finite_number(value: Any) -> bool:
    """A JSON number arithmetic can use: not a bool, not NaN or infinite, not an integer too big for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def set_confidence(matches: Sequence[Any], products: Sequence[tuple[str, float]], calibration: dict) -> None:
    """Give each match (an object with item_id, score, lead, confidence) its lead and its probability (none
    without a calibration); `products` are the best (item id, score) pairs by score, best first, at least two."""
    for m in matches:
        m.lead = lead(m.score, next((s for item, s in products if item != m.item_id), None))
        m.confidence = probability(calibration, features(m.score, m.lead)) if calibration else None


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, sample_weight: np.ndarray | None = None,
                        steps: int = 50) -> tuple[np.ndarray, float]:
    """(weights, bias) by Newton's method, a ridge of `l2` on the weights (a few hundred photos: no library
    needed). Features are used as they are, so the weights apply to raw values."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    s = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    ridge = l2 * np.r_[np.ones(x.shape[1]), 0]
    w = np.zeros(x1.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x1 @ w, -50, 50)))
        grad = x1.T @ (s * (p - y)) + ridge * w
        hess = (x1 * (s * p * (1 - p))[:, None]).T @ x1 + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w[:-1], float(w[-1])


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights under which both classes of 0/1 labels `y` weigh half, whatever their counts."""
    return np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> dict:
    """The calibrator: a logistic regression of same-product on `features`."""
    w, b = logistic_regression(x, y, l2)
    return {"features": list(FEATURES), "weights": [float(v) for v in w], "bias": b}


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def reliability(prob: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[tuple[float, float, float]]:
    """Per non-empty equal-width bin of the probability: (mean probability, share of those results that are right,
    the bin's share of all results)."""
    p, y = np.asarray(prob, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return [(float(p[which == b].mean()), float(y[which == b].mean()), float((which == b).mean()))
            for b in range(bins) if (which == b).any()]


def calibration_error(prob: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: the gap between the mean probability and how often the results are right,
    averaged over the `reliability` bins by their share (0: the probability says what it means)."""
    return float(sum(abs(mean - rate) * share for mean, rate, share in reliability(prob, correct, bins)))


def brier(prob: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared gap between the probability and the outcome (0: every call certain and right)."""
    return float(np.mean((np.asarray(prob, dtype=np.float64) - np.asarray(correct, dtype=np.float64)) ** 2))
