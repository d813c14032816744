"""Shared test set-up: offline Hugging Face, the real data in ../shared, the embedded default model."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no Hub calls from tests: they would stall, then fail
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LUMA = SHARED_DATA / "luma-inshop"
LUMA_TINY = SHARED_DATA / "luma-inshop-tiny"
DISTRACTORS = SHARED_DATA / "distractors"


@pytest.fixture(scope="session")
def default_model():
    """The embedded default MGA model (assets/mga-default), loaded once per test session."""
    from mga.hub import load_model

    return load_model(None)


@pytest.fixture(scope="session")
def luma_photos() -> list[Path]:
    """A few real garment photos (full size) from different items."""
    photos = sorted(LUMA.glob("img/*/*/*/*.jpg"))
    return photos[::97][:6]
