"""Fitting the close-up detector (mga.closeup) after training: a logistic regression on the coarse embedding,
the training split's close-ups (In-shop's "additional" photos) against its whole-garment photos and real phone
photos of whole garments (`distractors/validation`), stored with the weights (`MGAConfig.closeup`).

    python -m training.closeup --weights DIR [--data DATA] [--phones PHOTOS]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from mga.config import SHARED_DATA, TRAIN_BACKGROUNDS
from mga.data import Record, RetrievalData, load_retrieval_data
from mga.hub import WeightsError, load_model
from mga.imageio import load_photo
from mga.model import MGAModel

from .calibration import balanced_weights, logistic_regression

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
    p = argparse.ArgumentParser(prog="python -m training.closeup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint folder; its config.json gets the detector")
    p.add_argument("--data", default=str(SHARED_DATA / "luma-inshop"), help="In-shop-style data (its train split)")
    p.add_argument("--phones", default=str(TRAIN_BACKGROUNDS), help="phone photos of whole garments (not the test's)")
    args = p.parse_args(argv)
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
