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
    """The earlier per-result calibrator: a logistic regression of same-product on `features`."""
    w, b = logistic_regression(x, y, l2)
    return {"features": list(FEATURES), "weights": [float(v) for v in w], "bias": b}


def padded(values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Photos' candidate values of unequal counts as one (photos, most candidates) array, and where it holds one."""
    width = max(1, max((len(v) for v in values), default=1))
    out, held = np.zeros((len(values), width)), np.zeros((len(values), width), dtype=bool)
    for n, v in enumerate(values):
        out[n, :len(v)], held[n, :len(v)] = v, True
    return out, held


def log_likelihoods(values: Sequence[Sequence[float]], truth: Sequence[int], calibration: dict) -> np.ndarray:
    """Each photo's log probability of what it is under `calibration`: its `truth` product (a position into its
    candidate `values`), or "none of these" where the truth is -1."""
    out = []
    for v, t in zip(values, truth):
        p = product_probabilities(v, calibration)
        out.append(math.log(max(1e-300, float(p[t]) if t >= 0 else 1.0 - float(p.sum()))))
    return np.array(out)


def fit_products(values: Sequence[Sequence[float]], truth: Sequence[int], steps: int = 300) -> dict:
    """The calibrator: T, s0, T0 and w of the softmax over a search's products (module doc) by maximum likelihood.
    `values[n]`: photo n's candidate products' ranking values; `truth[n]`: which of them is its product, -1 where
    none is (a photo of something the shop does not sell, or its product was not among the candidates). The loss
    is the log loss of which product is the query's (or none) plus that of whether the #1 is: the app shows every
    listed product's probability, and the #1's decides "no confident match". (Chosen over either alone and over
    w = 0 by repeated two-fold cross-validation on the fitting photos, split by product: calibration error 0.027
    against 0.031-0.043, and the lowest log loss.)"""
    import torch

    v, held = padded(values)
    x = torch.as_tensor(v, dtype=torch.float64)
    mask = torch.as_tensor(held)
    t = torch.as_tensor(np.asarray(truth), dtype=torch.int64)
    gone = torch.full_like(x, -math.inf)
    ranked = torch.where(mask, x, gone).sort(1, descending=True).values
    top = ranked[:, 0]
    lead = (top - ranked[:, 1]).nan_to_num(0.0, posinf=0.0) if x.shape[1] > 1 else torch.zeros_like(top)
    picked_value = x.gather(1, t.clamp(min=0)[:, None])[:, 0]
    right = ((t >= 0) & (picked_value >= top)).double()  # the query's product is the #1
    # log 1/T, s0, log 1/T0, w through a softplus (w >= 0)
    theta = torch.tensor([math.log(50.0), 0.75, math.log(20.0), -2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        inv_t, s0, inv_t0 = theta[0].exp(), theta[1], theta[2].exp()
        w = torch.nn.functional.softplus(theta[3])
        logits = torch.where(mask, (x - top[:, None]) * inv_t, gone)
        none = (s0 - top) * inv_t0 - w * lead * inv_t
        denom = torch.logsumexp(torch.cat([logits, none[:, None]], 1), 1)
        picked = torch.where(t >= 0, logits.gather(1, t.clamp(min=0)[:, None])[:, 0], none)
        log_first = -denom  # log P(#1): the best product's logit is 0
        log_not_first = torch.log1p(-log_first.exp().clamp(max=1 - 1e-12))
        total = (denom - picked).mean() - (right * log_first + (1 - right) * log_not_first).mean()
        total.backward()
        return total

    opt.step(loss)
    log_inv_t, s0, log_inv_t0, raw_w = (float(z) for z in theta.detach())
    return softmax_calibration(math.exp(-log_inv_t), s0, math.exp(-log_inv_t0), math.log1p(math.exp(raw_w)))


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
