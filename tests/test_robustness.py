"""bench.robustness's corruptions on real Luma photos: each does what its column claims, and the example grid
shows them."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from bench import robustness
from bench.robustness import TWIN, corrupt_all, crop, plot_examples, tilt
from conftest import DISTRACTORS, inshop_subset
from mga.data import load_retrieval_data
from training.batches import training_halves
from mga.imageio import load_photo


BACKGROUNDS = sorted((DISTRACTORS / "validation").rglob("*.jpg"))  # a test is no place for the test split


def corrupted(luma_photos, all_but: bool = False, twin: bool = False
              ) -> tuple[list[Image.Image], dict[str, list[Image.Image]]]:
    photos = [load_photo(p) for p in luma_photos[:4]]
    return photos, corrupt_all(photos, BACKGROUNDS, all_but=all_but, twin=twin)


def test_each_corruption_changes_the_photo_as_its_column_says(luma_photos):
    photos, out = corrupted(luma_photos)
    assert list(out) == ["clean", "clutter", "tilt", "crop", "colour cast", "jpeg", "blur", "all at once"]
    for name, images in out.items():
        for before, after in zip(photos, images):
            assert after.mode == "RGB"
            if name == "crop":  # 55-75 % of each side
                assert 0.54 <= after.width / before.width <= 0.76 and 0.54 <= after.height / before.height <= 0.76
            elif name == "jpeg":
                assert after.size == (before.width // 3, before.height // 3)
            elif name == "all at once":  # cropped, then a 1/3-size JPEG
                assert after.width <= before.width * 0.76 / 3 + 1
            else:
                assert after.size == before.size
            differs = name == "clean" or np.abs(np.asarray(after, float) - np.asarray(before.resize(after.size),
                                                                                          float)).mean() > 1
            assert differs, name
    for before, after in zip(photos, out["clutter"]):  # the studio white is gone, the garment's pixels stay
        b, a = np.asarray(before, int), np.asarray(after, int)
        garment = (np.asarray(before.convert("L")) < 200)
        white = (b > 250).all(-1)
        assert (a[garment] == b[garment]).mean() > 0.95 and (a[white] != 255).any(-1).mean() > 0.5
    assert out["clean"] == photos


def test_leave_one_out_columns_and_the_example_grid(luma_photos, tmp_path):
    _, out = corrupted(luma_photos, all_but=True)
    assert [n for n in out if n.startswith("all but")] == [
        "all but clutter", "all but crop", "all but tilt", "all but colour cast", "all but blur", "all but jpeg"]
    assert out["all but jpeg"][0].width > out["all at once"][0].width * 2  # the 1/3-size JPEG is left out
    path = tmp_path / "examples.png"
    plot_examples(out, path, photos=3)
    grid = Image.open(path)
    assert grid.height > grid.width * 3  # one row per column of the bench (14), three photos in each
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_clean_twin_has_the_all_at_once_photos_framing_and_nothing_else(luma_photos):
    photos, out = corrupted(luma_photos, twin=True)
    assert list(out)[-1] == TWIN
    rng = random.Random(0)  # the first photo's draws: a background, then its crop and tilt
    rng.choice(BACKGROUNDS)
    assert np.array_equal(np.asarray(out[TWIN][0]), np.asarray(tilt(crop(photos[0], rng), rng)))
    for photo, spoilt, clean in zip(photos, out["all at once"], out[TWIN]):
        assert (clean.width // 3, clean.height // 3) == spoilt.size  # framed alike; only the twin skips the JPEG
        assert clean.size != photo.size


@pytest.mark.requires_shared
def test_the_validation_side_searches_training_photos_against_each_other(tmp_path, capsys):
    """--side validation: half of each training item's photos against the other half, on training backgrounds."""
    root = inshop_subset(tmp_path, lambda rows: list(dict.fromkeys(r[1] for r in rows if r[2] == "train"))[:3],
                         splits=("train",))
    out = robustness.main(["--data", str(root), "--side", "validation", "--zoom-grid", "0"])
    printed = capsys.readouterr().out
    queries, shop = training_halves(load_retrieval_data(root).train)
    assert f"validation side: {len(queries)} queries, {len(shop)} gallery photos" in printed
    assert "photos of validation/" in printed  # never the test split's clutter
    backbone, model = out.values()
    assert list(model) == ["clean", "clutter", "tilt", "crop", "colour cast", "jpeg", "blur", "all at once"]
    assert model["clean"]["R@1"] >= backbone["clean"]["R@1"]  # products the model trained on
