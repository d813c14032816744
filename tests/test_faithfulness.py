"""bench.faithfulness on real test queries: the deletion and insertion tests run end to end, and the whole-score map
points at what the score needs (its hottest pixels cost more than the figure's coldest when they go)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.faithfulness import BLOCK, FRACTIONS, MAPS, pixel_sets, random_blocks, reachable
from conftest import LUMA

pytestmark = pytest.mark.slow  # encodes a few dozen variants of each query


def test_pixel_sets_and_random_blocks_cover_what_they_say():
    heat = np.arange(100, dtype=np.float32).reshape(10, 10)
    figure = np.zeros((10, 10), dtype=bool)
    figure[5:, :] = True
    hot, cold = pixel_sets(heat, figure, 7)
    assert sorted(hot.tolist()) == list(range(93, 100)) and sorted(cold.tolist()) == list(range(50, 57))
    big = np.zeros((64, 64), dtype=bool)
    big[16:48, 16:48] = True
    blocks = random_blocks(big, 300, np.random.default_rng(0))
    assert len(blocks) >= 300 and len(set(blocks.tolist())) == len(blocks)


def test_random_blocks_on_a_figure_too_small_for_the_area_give_every_block_it_can():
    """A close-up's figure whose blocks cannot cover the area asked for: all they can cover, at once (the draw
    used to go on for ever)."""
    figure = np.zeros((100, 120), dtype=bool)
    figure[40:45, 60:62] = True
    every = np.zeros_like(figure)
    for y, x in zip(*np.nonzero(figure)):
        every[max(0, y - BLOCK // 2):y + BLOCK // 2, max(0, x - BLOCK // 2):x + BLOCK // 2] = True
    assert np.array_equal(reachable(figure), every)
    got = random_blocks(figure, 3000, np.random.default_rng(0))
    assert sorted(got.tolist()) == np.flatnonzero(every.ravel()).tolist()
    assert len(random_blocks(figure, 50, np.random.default_rng(0))) == 50


def test_deletion_and_insertion_on_real_queries(tmp_path):
    from bench.faithfulness import main

    progress = tmp_path / "progress.jsonl"
    main(["--data", str(LUMA), "--queries", "3", "--progress", str(progress)])
    summary = main(["--data", str(LUMA), "--queries", "4", "--progress", str(progress), "--json",
                    str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png")])  # goes on after the first three
    assert len(progress.read_text().splitlines()) == 4
    assert json.loads((tmp_path / "f.json").read_text())["queries"] == 4 and (tmp_path / "f.png").stat().st_size
    for test in ("deletion", "insertion"):
        assert set(summary[test]["maps"]) == set(MAPS)
        for row in summary[test]["maps"].values():
            assert all(np.isfinite(list(row["hottest"].values()))) and list(row["hottest"]) == list(FRACTIONS)
    whole = summary["deletion"]["maps"]["whole score"]
    assert whole["hottest"][0.05] > whole["coldest figure"][0.05]  # its hottest 5 % matter more than the coldest
