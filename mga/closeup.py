"""Close-ups: a query that shows a detail (a collar, a zip, a pocket) is searched among the gallery's zoom windows
too; a photo of a whole garment among whole photos only.

Zoom windows (mga.views) let a close-up find the product whose photo shows that detail; for a photo of a whole
garment they are chances of a wrong match (a t-shirt's chest looks like a jumper's chest). A logistic regression on
the query's coarse embedding tells the two apart. It is fitted after training, on photos outside the test split:
the training split's close-ups (In-shop's "additional" photos) against its whole-garment photos and real phone
photos of whole garments (`distractors/validation`). It is stored with the weights (`MGAConfig.closeup`) with the
fingerprint it was fitted for: other weights (mga.anchor, mga.wise) search every view until it is fitted again.
It is an option (`views="auto"`, `--views auto`), not the default (config.DEFAULT_VIEWS): over three seeds it lifted
real phone photos' P@1 by 0.049, short of the 0.05 its rule asked for (docs/experiments.md).

    python -m mga.closeup --weights DIR [--data DATA] [--phones PHOTOS]
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import DEFAULT_VIEWS, SHARED_DATA, TRAIN_BACKGROUNDS
from .confidence import balanced_weights, check_number, check_numbers, logistic_regression
from .data import Record, RetrievalData, load_retrieval_data
from .imageio import load_photo
from .model import MGAModel

VIEWS = ("auto", "all", "full")  # gallery views a query is searched among: by the detector, always all, never windows
CLOSEUP_VIEW = "additional"  # In-shop's name for its close-up photos (<colour>_<n>_<view>.jpg)
L2 = 1.0  # ridge on the weights: a few hundred photos, a couple of thousand dimensions


def photo_view(record: Record) -> str:
    """The view an In-shop file name gives (front, back, side, full, additional)."""
    return Path(record.path).stem.rsplit("_", 1)[-1]


def fit(model: MGAModel, closeups: Sequence, whole: Sequence) -> dict:
    """The detector for `model`, from images (paths or PIL images) of close-ups and of whole garments; classes
    weigh equally, whatever their counts."""
    x = model.encode_images([load_photo(p) for p in [*closeups, *whole]]).embedding.float().numpy().astype(np.float64)
    y = np.r_[np.ones(len(closeups)), np.zeros(len(whole))]
    w, b = logistic_regression(x, y, L2, balanced_weights(y))
    return {"weights": [round(float(v), 6) for v in w], "bias": round(float(b), 6),
            "fingerprint": model.fingerprint(),
            "fitted_on": f"{len(closeups)} close-ups and {len(whole)} photos of whole garments outside the test split"}


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
                  "(fit it again: python -m mga.closeup --weights DIR)", stacklevel=3)


def training_photos(data: RetrievalData, phones: str | Path | None) -> tuple[list[Path], list[Path]]:
    """(close-ups, whole garments) to fit on: the training split's photos by their view, and phone photos."""
    closeups = [data.root / r.path for r in data.train if photo_view(r) == CLOSEUP_VIEW]
    whole = [data.root / r.path for r in data.train if photo_view(r) != CLOSEUP_VIEW]
    whole += sorted(Path(phones).rglob("*.jpg")) if phones else []
    if not closeups or not whole:
        raise ValueError(f"{data.root}: the training split needs photos named *_{CLOSEUP_VIEW}.jpg (close-ups) "
                         "and others to learn close-ups from")
    return closeups, whole


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mga.closeup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint folder; its config.json gets the detector")
    p.add_argument("--data", default=str(SHARED_DATA / "luma-inshop"), help="In-shop-style data (its train split)")
    p.add_argument("--phones", default=str(TRAIN_BACKGROUNDS), help="phone photos of whole garments (not the test's)")
    args = p.parse_args(argv)
    from .hub import WeightsError, load_model

    try:
        model = load_model(args.weights)
        closeups, whole = training_photos(load_retrieval_data(args.data), args.phones)
    except (ValueError, WeightsError, FileNotFoundError) as e:
        raise SystemExit(f"{p.prog}: {e}") from None
    model.config.closeup = fit(model, closeups, whole)
    model.config.save(args.weights)
    print(f"{args.weights}: close-up detector fitted on {model.config.closeup['fitted_on']}")


if __name__ == "__main__":
    main()
