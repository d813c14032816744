"""bench.eye_sheets: answer sheets of real spoilt Luma-tiny queries, a key that names the right product, and scores
for a person's answers and for the models on the same queries."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import DISTRACTORS, inshop_subset


def section_items(rows: list[list[str]], section: str, count: int) -> list[str]:
    """The first `count` test items of one shop section."""
    return list(dict.fromkeys(item for path, item, split in rows
                              if split == "query" and path.startswith(f"img/{section}/")))[:count]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Three tees and one pair of trousers of Luma-tiny's test items."""
    return inshop_subset(tmp_path_factory.mktemp("luma-eye"), lambda rows: section_items(rows, "MEN/Tees", 3)
                         + section_items(rows, "MEN/Pants", 1))


def sheets(shop, out, *extra: str) -> list[str]:
    return ["--data", str(shop), "--out", str(out), "--distractors", str(DISTRACTORS / "test"), *extra]


def test_sheets_show_the_section_and_the_key_names_the_right_product(shop, tmp_path, capsys):
    from bench.eye_sheets import LETTERS, main
    from mga.data import load_retrieval_data

    out = tmp_path / "eye"
    main(sheets(shop, out, "--queries", "4"))
    key = json.loads((out / "key.json").read_text())
    data = load_retrieval_data(shop)
    gallery_items = {r.item_id: r.path.split("/")[2] for r in data.gallery}
    assert len(key["sheets"]) == 4 and key["settings"]["column"] == "all at once"
    assert key["settings"]["data"] == shop.name and key["settings"]["distractors"] == "test"  # names, not paths
    assert key["settings"]["backgrounds"] == len(list((DISTRACTORS / "test").rglob("*.jpg")))
    for s in key["sheets"]:
        query = data.query[s["query"]]
        section = query.path.split("/")[2]
        assert s["candidates"][LETTERS.index(s["answer"])] == query.item_id
        assert sorted(s["candidates"]) == sorted(i for i, c in gallery_items.items() if c == section)
        with Image.open(out / f"sheet{s['sheet']:03d}.png") as im:
            assert im.width > 300 and im.height >= 300
    assert {len(s["candidates"]) for s in key["sheets"]} >= {3}  # a tee's sheet shows all three tees
    form = (out / "answers.txt").read_text().splitlines()
    assert form[0].startswith("#") and form[1:] == [f"{n} " for n in range(4)]
    with pytest.raises(SystemExit, match="already holds sheets"):
        main(sheets(shop, out, "--queries", "4"))
    main(sheets(shop, tmp_path / "second", "--queries", "4", "--seed", "1", "--not-in", str(out)))
    second = json.loads((tmp_path / "second" / "key.json").read_text())["sheets"]
    assert {s["query"] for s in second}.isdisjoint(s["query"] for s in key["sheets"])
    assert len(second) == min(4, len(data.query) - 4)


def test_score_counts_the_answered_sheets_and_ranks_the_same_queries(shop, tmp_path, capsys):
    from bench.eye_sheets import LETTERS, main
    from mga.hub import describe_weights

    out = tmp_path / "eye"
    main(sheets(shop, out, "--queries", "4"))
    key = json.loads((out / "key.json").read_text())["sheets"]
    tee = next(s for s in key if len(s["candidates"]) == 3)
    wrong = next(c for c in LETTERS[:3] if c != tee["answer"])
    right = next(s for s in key if s is not tee)
    (out / "answers.txt").write_text(f"# filled in\n{tee['sheet']} {wrong.lower()}\n{right['sheet']} "
                                     f"{right['answer']} ?\n")
    results = main(sheets(shop, out, "--score", "--zoom-grid", "0"))
    person = results["a person, told the section"]
    assert person["R@1 told the section"] == 0.5 and person["sure"] == 1 and person["R@1 where sure"] == 0.0
    assert "2 of 4 sheets answered (1 sure)" in capsys.readouterr().out
    for label in ("untrained backbone (GeM)", describe_weights(None)):
        row = results[label]
        assert row["R@1"] in (0.0, 0.5, 1.0)
        assert row["R@1 told the section"] >= row["R@1"]  # the right product first overall is first in its section
    with pytest.raises(SystemExit, match="its sheets were drawn from"):
        main(["--data", str(shop), "--out", str(out), "--distractors", str(DISTRACTORS / "validation"), "--score"])
    (out / "answers.txt").write_text("0 B\n7 A\n")
    with pytest.raises(SystemExit, match="no sheet 7"):
        main(sheets(shop, out, "--score"))
    (out / "answers.txt").write_text("0 B maybe\nthree C\n")
    with pytest.raises(SystemExit, match="cannot read 'three C'"):
        main(sheets(shop, out, "--score"))
