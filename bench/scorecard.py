"""Every measure of a model in one row: the numbers the README's results table and docs/experiments.md report.

    python -m bench.scorecard --data ../shared/data/luma-inshop [--weights DIR|HUB_ID ...] --out runs/card

For each set of weights it runs the four benchmarks one after another, as their own CLIs would, and keeps each
one's JSON in --out/<model>/: `training.evaluate` (clean R@1 and R@10), `bench.robustness` (draw --seed, with the
clean-twin column), `bench.phone_photos` (the photo's kind of garment at #1 and in the top 20) and `bench.parts`
(the parts' least mass on the garment, their mean and widest centroid spread, how often the strongest part's name fits
the query). A step whose JSON is already there is read, not rerun, so an interrupted card resumes where it
stopped; a card folder keeps the settings it was measured with and refuses others. The untrained backbone's row
comes from the first model's robustness and phone-photo runs. The table is printed in Markdown and written, with
its numbers, to --out/scorecard.md and --out/scorecard.json.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Callable, Sequence

from bench import parts, phone_photos, robustness
from training import evaluate
from mga.config import TEST_DISTRACTORS
from mga.files import atomic_path
from mga.hub import describe_weights
from mga.views import ZoomViews

BACKBONE = "untrained backbone (GeM)"  # the row name bench.robustness and bench.phone_photos give the baseline
Row = dict[str, float]


def step_argv(step: str, args: argparse.Namespace, weights: str | None) -> list[str]:
    """The command line of one benchmark for one set of weights."""
    argv = ["--data", args.data] + (["--weights", weights] if weights else [])
    grid = ["--zoom-grid", str(args.zoom_grid)]
    return argv + {"evaluate": grid,
                   "robustness": grid + ["--seed", str(args.seed), "--twin", "--distractors", args.distractors],
                   "phone": grid + ["--photos", args.distractors],
                   "parts": []}[step]


STEPS: dict[str, Callable[[Sequence[str]], dict]] = {
    "evaluate": evaluate.main, "robustness": robustness.main, "phone": phone_photos.main, "parts": parts.main}


def folder_name(label: str) -> str:
    """A model's results folder: its label with everything but letters, digits, '.', '_' and '-' made '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"


def run_or_read(step: str, argv: list[str], path: Path) -> dict:
    """The benchmark's JSON from an earlier run, or a fresh run's, written atomically."""
    if path.exists():
        print(f"  {step}: reusing {path.name}")
        return json.loads(path.read_text())
    result = STEPS[step](argv)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def check_settings(out: Path, settings: dict) -> None:
    """Resuming reads earlier JSON as is, so a card folder holds one set of benchmark settings: refuse others."""
    path = out / "settings.json"
    if path.exists() and (earlier := json.loads(path.read_text())) != settings:
        changed = ", ".join(f"{k} {earlier.get(k)!r} -> {v!r}" for k, v in settings.items() if earlier.get(k) != v)
        raise SystemExit(f"{out} holds a card measured with other settings ({changed}): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n")


def shared_columns(results: dict[str, dict], row: str) -> Row:
    """A row's columns from bench.robustness and bench.phone_photos, which measure the backbone in the same run."""
    phone = results["phone"][row]["all"]
    return {**{name: r["R@1"] for name, r in results["robustness"][row].items()},
            "phone P@1": phone["P@1"], "phone P@20": phone["P@20"]}


def model_row(label: str, results: dict[str, dict]) -> Row:
    """One model's columns, read off its four benchmarks' results."""
    part = results["parts"]
    return {"clean R@1 (training.evaluate)": results["evaluate"]["R@1"], "clean R@10": results["evaluate"]["R@10"],
            **shared_columns(results, label),
            "least part mass on the garment": min(part["mass_on_figure"]),
            "mean part spread": sum(part["centroid_spread"]) / len(part["centroid_spread"]),
            "widest part spread": max(part["centroid_spread"]), "part names fit": part["name_fits"]}


def markdown(rows: dict[str, Row]) -> str:
    """A Markdown table, one row per model, columns in the order of the fullest row; a column a row lacks is '-'."""
    columns = list(dict.fromkeys(c for row in sorted(rows.values(), key=len, reverse=True) for c in row))
    lines = ["| R@1 unless said | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Row]:
    p = argparse.ArgumentParser(prog="python -m bench.scorecard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a Luma-style In-shop data root (its test split is measured)")
    p.add_argument("--weights", nargs="*", default=[None],
                   help="one or more checkpoint folders / Hub ids (default: the embedded default)")
    p.add_argument("--out", required=True, help="folder for each benchmark's JSON and the card; rerun to resume")
    p.add_argument("--seed", type=int, default=0, help="bench.robustness's draw of the corruptions")
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid, help="gallery zoom views (0: off)")
    p.add_argument("--distractors", default=str(TEST_DISTRACTORS),
                   help="phone photos, one folder per kind of garment: the clutter behind the garment and the "
                        "phone-photo queries (never a training folder)")
    args = p.parse_args(argv)
    labels = [describe_weights(w) for w in args.weights]
    folders = [Path(args.out) / folder_name(label) for label in labels]
    if len(set(folders)) < len(folders):
        raise SystemExit(f"two --weights share a results folder: {', '.join(map(str, folders))}")
    check_settings(Path(args.out), {k: getattr(args, k) for k in ("data", "seed", "zoom_grid", "distractors")})
    rows: dict[str, Row] = {}
    for n, (weights, label, folder) in enumerate(zip(args.weights, labels, folders)):
        folder.mkdir(parents=True, exist_ok=True)
        results = {}
        for i, step in enumerate(STEPS, 1):
            print(f"[model {n + 1}/{len(labels)}, step {i}/{len(STEPS)}] {label}: {step}", flush=True)
            results[step] = run_or_read(step, step_argv(step, args, weights), folder / f"{step}.json")
        if n == 0:
            rows[BACKBONE] = shared_columns(results, BACKBONE)
        rows[label] = model_row(label, results)
    table = markdown(rows)
    print(table, end="")
    with atomic_path(Path(args.out) / "scorecard.md") as tmp:
        tmp.write_text(table)
    with atomic_path(Path(args.out) / "scorecard.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
