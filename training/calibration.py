"""Fitting and measuring the confidence (mga.confidence): its four parameters by maximum likelihood over the
products of searches outside the test split, and the measures a calibration is judged by (AUROC, reliability,
expected calibration error, Brier score). `python -m bench.confidence --fit` runs them."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mga.confidence import FEATURES, product_probabilities, softmax_calibration


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
