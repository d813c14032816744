"""bench.scorecard: the four benchmarks on a few real Luma-tiny items and phone photos, their numbers in one row,
and a rerun that reads what an earlier run wrote."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import DISTRACTORS, inshop_subset


@pytest.fixture(scope="module")
def few_items(tmp_path_factory):
    """An In-shop root of four test items of Luma-tiny (their query and gallery photos) and a folder of four
    phone photos of two kinds."""
    root = inshop_subset(tmp_path_factory.mktemp("luma-few"), lambda rows: list(dict.fromkeys(
        item for _, item, split in rows if split == "query"))[::9][:4])
    phones = root / "phones"
    for kind in ("pants", "t-shirt"):
        (phones / kind).mkdir(parents=True)
        for photo in sorted((DISTRACTORS / "test" / kind).glob("*.jpg"))[:2]:
            shutil.copy(photo, phones / kind / photo.name)
    return root


@pytest.mark.slow
def test_scorecard_rows_are_the_benchmarks_numbers_and_a_rerun_resumes(few_items, tmp_path, capsys):
    from bench.scorecard import BACKBONE, folder_name, main
    from mga.hub import describe_weights

    out = tmp_path / "card"
    argv = ["--data", str(few_items), "--out", str(out), "--zoom-grid", "0", "--distractors",
            str(few_items / "phones")]
    rows = main(argv)
    label = describe_weights(None)
    assert list(rows) == [BACKBONE, label]
    folder = out / folder_name(label)
    saved = {step: json.loads((folder / f"{step}.json").read_text())
             for step in ("evaluate", "robustness", "phone", "parts")}
    partition = (few_items / "Eval" / "list_eval_partition.txt").read_text().split()
    assert saved["evaluate"]["queries"] == partition.count("query") >= 4
    model = rows[label]
    assert model["clean R@1 (training.evaluate)"] == saved["evaluate"]["R@1"]
    assert model["clean R@10"] == saved["evaluate"]["R@10"]
    assert model["all at once"] == saved["robustness"][label]["all at once"]["R@1"]
    assert model["all at once, clean twin"] == saved["robustness"][label]["all at once, clean twin"]["R@1"]
    assert rows[BACKBONE]["clutter"] == saved["robustness"][BACKBONE]["clutter"]["R@1"]
    assert model["phone P@1"] == saved["phone"][label]["all"]["P@1"]
    assert saved["phone"][label]["all"]["photos"] == 4
    assert model["least part mass on the garment"] == min(saved["parts"]["mass_on_figure"])
    spread = saved["parts"]["centroid_spread"]
    assert model["widest part spread"] == max(spread)
    assert model["mean part spread"] == pytest.approx(sum(spread) / len(spread))
    assert all(0.0 <= v <= 1.0 for row in rows.values() for v in row.values())

    table = (out / "scorecard.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[0].count("|") == table[2].count("|")
    assert table[2].startswith(f"| {BACKBONE} | - | - |")  # training.evaluate measures MGA models only
    assert json.loads((out / "scorecard.json").read_text()) == rows

    (folder / "parts.json").unlink()
    capsys.readouterr()
    assert main(argv) == rows
    log = capsys.readouterr().out
    assert all(f"{step}: reusing {step}.json" in log for step in ("evaluate", "robustness", "phone"))
    assert "parts: reusing" not in log and (folder / "parts.json").exists()
    with pytest.raises(SystemExit, match="other settings \\(seed 0 -> 1\\)"):
        main(argv + ["--seed", "1"])
