"""How sure a search is that a result is the query's product: one calibrated belief over the products it lists.

A raw ATA score says little on its own: a hat photo's best match scores about what a correct match of a cluttered
phone photo scores. What tells them apart is how the score stands against the other products' (a product that is
in the gallery stands out from the rest; a photo of something the shop does not sell matches many products about
equally). The probabilities of a search's products are one distribution: each candidate product's ranking value
(its ATA score plus its category vote, what the results are ordered by) and a "none of these" outcome go through
a softmax over every product the search re-ranked (v_1 >= v_2 >= ... their values):

    P(product i) = exp((v_i - v_1) / T) / (exp(u) + sum_j exp((v_j - v_1) / T)),
    u = (s0 - v_1) / T0 - w (v_1 - v_2) / T        ("none of these")

The probabilities sum to at most 1 (the rest is "none of these"), never rise down the ranking, and two products
close in value share the belief rather than each being called likely. T says how much a lead counts between
products; s0 is the best value at which "none of these" weighs as much as the best product, T0 how fast that
changes with the best value, and w how much less "none of these" weighs when the best product stands out from the
next. The four are fitted by maximum likelihood on photos outside the test split (`python -m bench.confidence
--fit`) and stored with the weights (`MGAConfig.confidence`) in the form the earlier calibrator had: a weight on the
best value ("score", 1/T0), one on the leads ("margin", 1/T), a bias (-s0/T0), and "none_lead" (w). That
calibrator, a logistic regression of each result's own score and lead fitted per result (so that two close
products could both be called likely), weighed the same things; an earlier calibration is read as this model with
its own weights and w = 0.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

FEATURES = ("score", "margin")  # what the weights weigh: the best product's value; each product's lead (module doc)
CONFIDENT = 0.5  # the probability from which a result counts as the query's product: below, "no confident match"
MODEL = "products"  # MGAConfig.confidence["model"]: fitted as the softmax over a search's products
# Two products are close when the one below holds at least this share of the one above's probability: the app
# names both ("A or B?") rather than one.
CLOSE = 0.5


def likely(confidence: float | None) -> bool:
    """Whether a result with this confidence counts as the query's product (always, for weights without a
    calibration, whose results carry none)."""
    return confidence is None or confidence >= CONFIDENT


def lead(score: float, best_other: float | None) -> float:
    """How far a result's score stands above the best other product's (negative below it; the score itself when
    the ranking has no other product)."""
    return score - (best_other if best_other is not None else 0.0)


def features(score: float, margin: float) -> np.ndarray:
    """The earlier per-result form's input for one result: its score and its `lead`."""
    return np.array([score, margin], dtype=np.float64)


def probability(calibration: dict, x: np.ndarray) -> float:
    """The earlier form: P(same product) of one result from its `features` under a logistic calibration."""
    z = float(np.dot(calibration["weights"], x) + calibration["bias"])
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def parameters(calibration: dict) -> tuple[float, float, float, float]:
    """(T, s0, T0, w) of a stored calibration (`check_calibration` has accepted it)."""
    w_score, w_lead = (float(w) for w in calibration["weights"])
    return 1.0 / w_lead, -float(calibration["bias"]) / w_score, 1.0 / w_score, float(calibration.get("none_lead", 0))


def softmax_calibration(temperature: float, none_score: float, none_temperature: float,
                        none_lead: float = 0.0) -> dict:
    """The stored form (module doc) of T, s0, T0 and w."""
    return {"model": MODEL, "features": list(FEATURES), "weights": [1.0 / none_temperature, 1.0 / temperature],
            "bias": -none_score / none_temperature, "none_lead": none_lead}


def product_probabilities(values: Sequence[float], calibration: dict) -> np.ndarray:
    """P(product i is the query's) for every candidate product of one search, from their ranking values (any
    order; the same order out). They sum to at most 1; a higher value never gets a lower probability."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v
    t, s0, t0, w = parameters(calibration)
    top = float(v.max())
    logits = (v - top) / t  # the best product's logit is 0
    second = np.partition(logits, -2)[-2] if len(v) > 1 else 0.0  # -(v_1 - v_2) / T; no runner-up: no lead
    none = (s0 - top) / t0 + w * second
    shift = max(0.0, none)
    e = np.exp(logits - shift)
    return e / (math.exp(none - shift) + e.sum())


def check_calibration(calibration: Any) -> None:
    """Refuse a stored calibration (MGAConfig.confidence) that `product_probabilities` could not apply to every
    search: it is empty (none fitted), or it holds one finite positive weight per feature of FEATURES and a finite
    bias, the features it names, if it names them, are FEATURES, the model it names, if any, is MODEL, and its
    none_lead, if any, is a finite number >= 0. Raises ValueError naming the field."""
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
    if calibration.get("model", MODEL) != MODEL:
        raise ValueError(f"{field}.model = {str(calibration['model'])[:40]}: this version reads {MODEL!r}")
    if "none_lead" in calibration:
        check_number(calibration["none_lead"], f"{field}.none_lead")
        if calibration["none_lead"] < 0:
            raise ValueError(f"{field}.none_lead = {calibration['none_lead']}: must be >= 0")
    if not all(w > 0 for w in calibration["weights"]):
        raise ValueError(f"{field}.weights = {str(calibration['weights'])[:80]}: both must be above 0 (a higher "
                         "value and a larger lead make a product likelier)")


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


def set_confidence(matches: Sequence[Any], products: Sequence[tuple[str, float, float]], calibration: dict) -> None:
    """Give each match (an object with item_id, score, lead, confidence, close_to_next; listed best first) its lead,
    its product's probability and whether the next other product listed is close to it (none without a
    calibration). `products`: every candidate product of the search as (item id, ATA score, ranking value)."""
    best_two = sorted(products, key=lambda p: -p[1])[:2]
    prob = dict(zip((item for item, _, _ in products),
                    product_probabilities([v for _, _, v in products], calibration))) if calibration else {}
    above = 1.0
    for m in matches:
        m.lead = lead(m.score, next((s for item, s, _ in best_two if item != m.item_id), None))
        if calibration:
            # the ranking reads the same values, so this holds already; kept for results ranked by other means
            above = min(above, float(prob.get(m.item_id, 0.0)))
            m.confidence = above
        else:
            m.confidence = None
    for i, m in enumerate(matches):
        following = next((n for n in matches[i + 1:] if n.item_id != m.item_id), None)
        m.close_to_next = bool(calibration and following is not None and m.confidence > 0
                               and following.confidence >= CLOSE * m.confidence)


