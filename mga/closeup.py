"""Close-ups: a query that shows a detail (a collar, a zip, a pocket) is searched among the gallery's zoom windows
too; a photo of a whole garment among whole photos only.

Zoom windows (mga.views) let a close-up find the product whose photo shows that detail; for a photo of a whole
garment they are chances of a wrong match (a t-shirt's chest looks like a jumper's chest). A logistic regression on
the query's coarse embedding tells the two apart, stored with the weights (`MGAConfig.closeup`) with the
fingerprint it was fitted for: other weights search every view until it is fitted again. It is an option
(`views="auto"`, `--views auto`), not the default (config.DEFAULT_VIEWS): over three seeds it lifted real phone
photos' P@1 by 0.049, short of the 0.05 its rule asked for (docs/experiments.md).

Fitting it: training.closeup.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from .config import DEFAULT_VIEWS
from .confidence import check_number, check_numbers
from .model import MGAModel

VIEWS = ("auto", "all", "full")  # gallery views a query is searched among: by the detector, always all, never windows
def check_detector(fitted: Any, width: int) -> None:
    """Refuse a stored detector (MGAConfig.closeup) that `whole_garment` could not apply to the coarse embeddings
    of a model whose embedding has `width` numbers (MGAModel.embedding_width): it is empty (none fitted), or it
    holds one finite weight per number, a finite bias and the fingerprint (a string) of the weights it was fitted
    for. Raises ValueError naming the field."""
    if not fitted:
        return
    field = "MGAConfig.closeup"
    if not isinstance(fitted, dict):
        raise ValueError(f"{field} must be a JSON object, not a {type(fitted).__name__}")
    check_numbers(fitted.get("weights"), f"{field}.weights", width, "one per number of the coarse embedding")
    check_number(fitted.get("bias"), f"{field}.bias")
    if not isinstance(fitted.get("fingerprint"), str):
        raise ValueError(f"{field}.fingerprint = {str(fitted.get('fingerprint'))[:40]}: must be the string "
                         "MGAModel.fingerprint gives the weights it was fitted for")


def fitted_for(model: MGAModel, fingerprint: str | None = None) -> bool:
    """Whether the model's detector was fitted for these weights (`fingerprint`: theirs, when the caller has it;
    computing it hashes every weight)."""
    return model.config.closeup.get("fingerprint") == (fingerprint or model.fingerprint())


def detector(model: MGAModel, fingerprint: str | None = None) -> tuple[torch.Tensor, float] | None:
    """The model's fitted detector as (weights, bias), or None: none fitted, or one fitted for other weights (with a
    warning). It hashes the weights, so a search engine calls it once, not per query."""
    fitted = model.config.closeup
    if not fitted:
        return None
    if not fitted_for(model, fingerprint):
        _stale()
        return None
    return torch.tensor(fitted["weights"], dtype=torch.float32), float(fitted["bias"])


def whole_garment(found: tuple[torch.Tensor, float] | None, embedding: torch.Tensor,
                  views: str = DEFAULT_VIEWS) -> torch.Tensor:
    """(Q,) True for the queries to be searched among whole photos only, from their coarse embeddings (Q, E) and
    the model's `detector`."""
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, not {views!r}")
    if views == "full":
        return torch.ones(len(embedding), dtype=torch.bool)
    if views == "all" or found is None:
        return torch.zeros(len(embedding), dtype=torch.bool)
    w, b = found
    if len(w) != embedding.shape[1]:  # a hand-edited config.json
        _stale()
        return torch.zeros(len(embedding), dtype=torch.bool)
    return embedding.float() @ w + b <= 0


def _stale() -> None:
    warnings.warn("the close-up detector was fitted for other weights; every query searches all views "
                  "(fit it again: python -m training.closeup --weights DIR)", stacklevel=3)

