"""A person's score on bench.robustness's photos: can the eye tell which product a spoilt photo shows?

    python -m bench.eye_sheets --data ../shared/data/luma-inshop --out runs/eye            # write the sheets
    (fill in runs/eye/answers.txt: one letter per sheet, without opening key.json)
    python -m bench.eye_sheets --data ../shared/data/luma-inshop --out runs/eye --score    # score them

A benchmark target is only worth chasing if the photos still carry their product. Each sheet shows one test query
as a column of bench.robustness corrupts it (draw --seed, as the model sees it: letterboxed, enlarged) beside every
test product of the query's shop section (its gender and category), each by all its gallery photos, lettered in a
random order: the person is told the section and picks a product. `--score` prints the person's R@1 (and that of
the answers marked sure) next to the models' and the untrained backbone's on the same queries, ranked the app's way
over the whole gallery and told the section (the first product of the section in their ranking).
"""
from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Sequence

from PIL import Image, ImageDraw

from bench.robustness import clutter_backgrounds, corrupt_all
from mga.config import TEST_DISTRACTORS
from mga.data import Record, load_retrieval_data
from training.distill import PretrainedGeM
from training.evaluate import Shop
from mga.files import atomic_path
from mga.hub import describe_weights, load_model
from mga.imageio import load_image, load_photo
from mga.transforms import letterbox
from mga.views import ZoomViews

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
QUERY_SIDE, CELL, SHOWN = 280, (92, 114), 4  # query as the model's letterboxed input; product photos per row


def section(record: Record) -> str:
    """A product's shop section: the folder that holds its item folder (In-shop: img/<GENDER>/<Category>)."""
    return str(PurePosixPath(record.path).parent.parent)


def products_by_section(gallery: Sequence[Record]) -> dict[str, dict[str, list[Record]]]:
    """section -> item id -> its gallery photos."""
    out: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in gallery:
        out[section(r)][r.item_id].append(r)
    return out


def sheet(query: Image.Image, products: list[list[Image.Image]], title: str) -> Image.Image:
    """The query on the left; one lettered row of photos per candidate product on the right."""
    cw, ch = CELL
    height = max(QUERY_SIDE + 30, len(products) * (ch + 6) + 10)
    out = Image.new("RGB", (QUERY_SIDE + 50 + SHOWN * (cw + 4), height), (200, 200, 200))
    draw = ImageDraw.Draw(out)
    out.paste(letterbox(query, QUERY_SIDE), (10, 10))
    draw.text((10, QUERY_SIDE + 15), title, fill=(0, 0, 0))
    for row, photos in enumerate(products):
        y = 10 + row * (ch + 6)
        draw.text((QUERY_SIDE + 25, y + ch // 2 - 5), LETTERS[row], fill=(0, 0, 0))
        for k, photo in enumerate(photos[:SHOWN]):
            photo = photo.copy()
            photo.thumbnail(CELL)
            cell = Image.new("RGB", CELL, (255, 255, 255))
            cell.paste(photo, ((cw - photo.width) // 2, (ch - photo.height) // 2))
            out.paste(cell, (QUERY_SIDE + 45 + k * (cw + 4), y))
    return out


def drawn_with(data, distractors: str, backgrounds: list[Path]) -> dict:
    """What a set of sheets was drawn from, by name and size rather than path, so that a key holds no machine path
    and can be scored on another checkout: the data folder and its query count, the clutter folder and its photos."""
    return {"data": data.root.name, "queries": len(data.query), "distractors": Path(distractors).name,
            "backgrounds": len(backgrounds)}


def spoilt_queries(data, column: str, seed: int, backgrounds: list[Path]) -> list[Image.Image]:
    """Every test query as `column` of bench.robustness draws it with `seed`."""
    columns = corrupt_all([load_photo(data.root / r.path) for r in data.query], backgrounds, seed, twin=True)
    if column not in columns:
        raise SystemExit(f"--column {column!r}: bench.robustness has {', '.join(columns)}")
    return columns[column]


def write_sheets(args: argparse.Namespace) -> None:
    """The sheets, the answer form and the key (which query each sheet shows and its right letter)."""
    data = load_retrieval_data(args.data)
    out = Path(args.out)
    if (out / "key.json").exists():
        raise SystemExit(f"{out} already holds sheets: score them with --score, or choose another --out")
    seen = {s["query"] for earlier in args.not_in
            for s in json.loads((Path(earlier) / "key.json").read_text())["sheets"]}
    fresh = [i for i in range(len(data.query)) if i not in seen]
    rng = random.Random(args.sample_seed)
    chosen = sorted(rng.sample(fresh, min(args.queries, len(fresh))))
    backgrounds = clutter_backgrounds(args.distractors)
    source = drawn_with(data, args.distractors, backgrounds)
    images = spoilt_queries(data, args.column, args.seed, backgrounds)
    sections = products_by_section(data.gallery)
    out.mkdir(parents=True, exist_ok=True)
    key = []
    for n, qi in enumerate(chosen):
        shelf = sections[section(data.query[qi])]
        candidates = sorted(shelf)
        rng.shuffle(candidates)
        if len(candidates) > len(LETTERS):
            raise SystemExit(f"section {section(data.query[qi])} has {len(candidates)} products, more than letters")
        photos = [[load_image(data.root / r.path) for r in shelf[item]] for item in candidates]
        sheet(images[qi], photos, f"sheet {n}").save(out / f"sheet{n:03d}.png")
        key.append({"sheet": n, "query": qi, "answer": LETTERS[candidates.index(data.query[qi].item_id)],
                    "candidates": candidates})
    settings = {**source, **{k: getattr(args, k) for k in ("column", "seed", "sample_seed", "not_in")}}
    with atomic_path(out / "key.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "sheets": key}, indent=1) + "\n")
    form = [f"# {len(key)} sheets of {args.column!r}: one line per sheet, 'N LETTER', add ' ?' when unsure"]
    (out / "answers.txt").write_text("\n".join(form + [f"{n} " for n in range(len(key))]) + "\n")
    print(f"{len(key)} sheets in {out}; answer in {out / 'answers.txt'} without opening key.json")


def read_answers(path: Path) -> dict[int, tuple[str, bool]]:
    """Sheet -> (letter, sure) for the answered lines of the form."""
    answers = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or len(fields) < 2:
            continue
        if not fields[0].isdigit() or fields[1].upper() not in LETTERS:
            raise SystemExit(f"{path}: cannot read {line!r} (expected 'N LETTER' or 'N LETTER ?')")
        answers[int(fields[0])] = (fields[1].upper(), "?" not in fields[2:])
    return answers


def first_found(ranked: Sequence[str], truth: str, allowed: set[str] | None = None) -> bool:
    """Whether the first product of the ranking (among `allowed`, when told the section) is the right one."""
    return next(item for item in ranked if allowed is None or item in allowed) == truth


def score(args: argparse.Namespace) -> dict:
    """The person's R@1 on the answered sheets, and each model's and the backbone's on the same queries."""
    out = Path(args.out)
    if not (out / "key.json").exists():
        raise SystemExit(f"{out}: no sheets to score; write them first (without --score)")
    key = json.loads((out / "key.json").read_text())
    settings, sheets = key["settings"], {s["sheet"]: s for s in key["sheets"]}
    answers = read_answers(out / "answers.txt")
    if not answers:
        raise SystemExit(f"{out / 'answers.txt'}: no sheet answered yet")
    if unknown := sorted(set(answers) - set(sheets)):
        raise SystemExit(f"{out / 'answers.txt'}: no sheet {', '.join(map(str, unknown))} (0-{len(sheets) - 1})")
    done = sorted(answers)
    sure = [n for n in done if answers[n][1]]
    right = {n: answers[n][0] == sheets[n]["answer"] for n in done}
    results: dict[str, dict[str, float]] = {"a person, told the section": {
        "R@1 told the section": sum(right.values()) / len(done),
        "R@1 where sure": sum(right[n] for n in sure) / max(len(sure), 1), "sure": len(sure)}}
    data = load_retrieval_data(args.data)
    backgrounds = clutter_backgrounds(args.distractors)
    source = drawn_with(data, args.distractors, backgrounds)
    if any(settings[k] != v for k, v in source.items()):
        raise SystemExit(f"{out}: its sheets were drawn from {', '.join(f'{k} {settings[k]}' for k in source)}; "
                         f"--data and --distractors give {', '.join(f'{k} {v}' for k, v in source.items())}")
    images = spoilt_queries(data, settings["column"], settings["seed"], backgrounds)
    queries = [images[sheets[n]["query"]] for n in done]
    truth = [data.query[sheets[n]["query"]].item_id for n in done]
    allowed = [set(sheets[n]["candidates"]) for n in done]
    items = [r.item_id for r in data.gallery]
    models = [(describe_weights(w), load_model(w)) for w in args.weights]
    baseline = PretrainedGeM(models[0][1])
    order = baseline.ranking(queries, baseline.encode([load_image(data.root / r.path) for r in data.gallery]),
                             len(items))
    ranked_items = {"untrained backbone (GeM)": [[items[j] for j in row] for row in order.tolist()]}
    for label, model in models:
        with Shop.indexed(model, data.root, data.gallery, ZoomViews(grid=args.zoom_grid)) as shop:
            order, _ = shop.rank(model.encode_images(queries), len(items))
            ranked_items[label] = [[shop.item_ids[j] for j in row] for row in order.tolist()]
    for label, ranked in ranked_items.items():
        results[label] = {
            "R@1 told the section": sum(map(first_found, ranked, truth, allowed)) / len(done),
            "R@1": sum(first_found(r, t) for r, t in zip(ranked, truth)) / len(done)}
    print(f"{len(done)} of {len(sheets)} sheets answered ({len(sure)} sure), {settings['column']!r}, draw "
          f"{settings['seed']}; chance told the section: {sum(1 / len(a) for a in allowed) / len(done):.3f}")
    for label, row in results.items():
        print(f"{label:<40}" + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in row.items()))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(prog="python -m bench.eye_sheets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a Luma-style In-shop data root (its test split is shown)")
    p.add_argument("--out", required=True, help="folder for the sheets, the answer form and the key")
    p.add_argument("--column", default="all at once", help="the bench.robustness column the queries come from")
    p.add_argument("--seed", type=int, default=0, help="bench.robustness's draw of the corruptions")
    p.add_argument("--queries", type=int, default=48, help="how many test queries to sample")
    p.add_argument("--sample-seed", type=int, default=7, help="which queries, and the order of the letters")
    p.add_argument("--not-in", nargs="*", default=[], metavar="DIR",
                   help="leave out the queries of these earlier sheet folders: a rater who has seen a query's key "
                        "would recognise it under another draw")
    p.add_argument("--distractors", default=str(TEST_DISTRACTORS),
                   help="backgrounds for the clutter corruption (scoring needs the ones the sheets were drawn with)")
    p.add_argument("--score", action="store_true", help="score the filled-in answers.txt")
    p.add_argument("--weights", nargs="*", default=[None],
                   help="with --score: checkpoint folders / Hub ids to rank the same queries (default: embedded)")
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="with --score: gallery zoom views (0: off)")
    p.add_argument("--json", help="with --score: also write the scores here")
    args = p.parse_args(argv)
    if args.score:
        return score(args)
    write_sheets(args)
    return None


if __name__ == "__main__":
    main()
