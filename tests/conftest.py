"""Shared test set-up: offline Hugging Face, the test data, the embedded default model.

The data: small copies in tests/data (tests/data/README.md), which every clone has, and the real data in
../shared/data beside the repository, which a bare clone does not. LUMA_TINY and DISTRACTORS are the shared sets
where they are, else their small copies (the same layout, fewer photos); LUMA (full-size photos) is shared only.
A test that needs the shared data itself (its full size, its counts, particular photos of it) is marked
`requires_shared` and is skipped, saying why, where ../shared/data is absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no Hub calls from tests: they would stall, then fail
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HAS_SHARED = all((SHARED_DATA / name).is_dir() for name in ("luma-inshop", "luma-inshop-tiny", "distractors"))
FIXTURES = ROOT / "tests" / "data"
SHOP_MINI = FIXTURES / "luma-inshop-mini"  # 21 Luma-tiny items (87 photos, <= 96 px), In-shop layout
PHOTOS_448 = FIXTURES / "luma-448"  # 7 full-size Luma photos downscaled to 448 px, at their In-shop paths
PHONES_MINI = FIXTURES / "phones-mini"  # 16 phone photos (160 px), validation/<kind> and test/<kind>
LUMA = SHARED_DATA / "luma-inshop"  # full size: only tests marked requires_shared (or slow) read it
LUMA_TINY = SHARED_DATA / "luma-inshop-tiny" if HAS_SHARED else SHOP_MINI
DISTRACTORS = SHARED_DATA / "distractors" if HAS_SHARED else PHONES_MINI
NO_SHARED = "needs ../shared/data (the full Luma set and phone photos, beside the repository), absent here"


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_shared: reads ../shared/data itself (full-size photos, whole "
                            "splits, numbers measured on them); skipped where it is absent")


def pytest_collection_modifyitems(config, items):
    if HAS_SHARED:
        return
    skip = pytest.mark.skip(reason=NO_SHARED)
    for item in items:
        if item.get_closest_marker("requires_shared"):
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip where this clone does not have it."""
    if not HAS_SHARED:
        pytest.skip(NO_SHARED)
    return SHARED_DATA


def inshop_subset(root: Path, pick: Callable[[list[list[str]]], list[str]],
                  splits: tuple[str, ...] = ("query", "gallery")) -> Path:
    """An In-shop root under `root` holding the Luma-tiny items that `pick` chooses from the partition's rows
    (image, item, split): their photos of `splits`, copied, with their own partition file."""
    lines = (LUMA_TINY / "Eval" / "list_eval_partition.txt").read_text().splitlines()
    rows = [line.split() for line in lines[2:]]
    items = set(pick(rows))
    kept = [r for r in rows if r[1] in items and r[2] in splits]
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join([str(len(kept)), lines[1]] + [" ".join(r) for r in kept]) + "\n")
    for path, _, _ in kept:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LUMA_TINY / path, root / path)
    return root


@pytest.fixture(scope="session")
def default_model():
    """The embedded default MGA model (assets/mga-default), loaded once per test session."""
    from mga.hub import load_model

    return load_model(None)


@pytest.fixture(scope="session")
def luma_photos() -> list[Path]:
    """Six real garment photos of different items, men's and women's, at 448 px (tests/data/luma-448)."""
    photos = sorted(PHOTOS_448.glob("img/*/*/*/*.jpg"))
    return [p for p in photos if "Bras_Tanks" not in p.parts]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Callable[[str, str], Path]:
    """An offline Hugging Face cache in tmp_path; calling it fills `repo_id` at `commit` (also the `main` ref)
    with the embedded default's files, laid out as huggingface_hub itself writes them. huggingface_hub reads
    its environment at import time, so its constants are set as well."""
    from huggingface_hub import constants

    from mga.config import DEFAULT_WEIGHTS_DIR

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def fill(repo_id: str, commit: str) -> Path:
        org, name = repo_id.split("/")
        repo = cache / f"models--{org}--{name}"
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(DEFAULT_WEIGHTS_DIR / f, snapshot / f)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return cache

    return fill


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running app (tests/app_server.py) for the tests of one module: its URL (a str, with the server's `pid` and
    temporary folder `tmp`). Once stopped (as a Space is, by SIGTERM), the app must have removed the copies of
    gallery images it served (ui.files.GalleryFiles) and every photo it was sent (Gradio's cache): only its own
    examples may stay."""
    from app_server import RunningApp, start_app, stop_app

    tmp = tmp_path_factory.mktemp("app")
    proc, url, log = start_app(tmp)
    yield RunningApp(url, proc.pid, tmp)
    stop_app(proc)
    log.close()
    assert proc.returncode == 0, f"the app did not stop cleanly ({proc.returncode})"
    assert not list(tmp.glob("mga-gallery-*")), "the stopped app left its gallery copies behind"
    examples = {p.name for p in (ROOT / "assets" / "examples").iterdir()}
    kept = [f for f in tmp.rglob("*") if f.is_file() and f != tmp / "app.log" and f.name not in examples]
    assert not kept, f"the stopped app kept files it was sent or made: {kept[:5]}"
