"""Compare training recipes over seeds: every recipe is a set of `python -m training.train` flags.

    python -m bench.sweep --data ../shared/data/luma-inshop --out runs/sweep --seeds 0 1 2 \\
        --recipe default= --recipe previous="--image-size 224 --epochs 40 --detail 0"

Runs go seed by seed (every recipe's seed 0 first), several at once with --parallel, each with a time limit,
so that a sweep cut short still holds comparable results. Each finished run is appended to results.jsonl;
the end writes table.md (mean +- std over seeds of R@1 coarse / ATA, R@5 and R@10 with ATA).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence


def train_run(data: str, out: Path, flags: Sequence[str], seed: int, workers: int = 2, threads: int = 0,
              device: str = "auto", timeout: float | None = None) -> dict:
    """One `python -m training.train` run (resumed if out/ holds a checkpoint); its eval.json.
    threads > 0 caps the run's CPU threads, so that parallel runs do not oversubscribe the cores."""
    if not (out / "eval.json").exists():
        cmd = [sys.executable, "-m", "training.train", "--data", data, "--out", str(out), "--seed", str(seed),
               "--workers", str(workers), "--device", device, "--resume", *flags]
        env = {**os.environ, "TQDM_DISABLE": "1"}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "log.txt", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    return json.loads((out / "eval.json").read_text())


def summarize(values: Sequence[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, _, flags = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"recipe {text!r}: expected NAME=FLAGS")
    return name, shlex.split(flags)


COLUMNS = (("coarse", "R@1"), ("ata", "R@1"), ("ata", "R@5"), ("ata", "R@10"))


def table(results: list[dict], recipes: dict[str, list[str]]) -> str:
    head = " | ".join(f"{k} {d}" for d, k in COLUMNS)
    lines = [f"| recipe | {head} | seeds | train s |", "|---" * (len(COLUMNS) + 3) + "|"]
    for name in recipes:
        runs = [r for r in results if r["recipe"] == name and "eval" in r]
        if not runs:
            lines.append(f"| {name} |" + " - |" * len(COLUMNS) + " 0 | - |")
            continue
        cells = []
        for desc, key in COLUMNS:
            s = summarize([r["eval"][desc][key] for r in runs])
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        secs = statistics.mean(r["eval"]["train_seconds"] for r in runs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(runs)} | {secs:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", action="append", type=parse_recipe, required=True, help='NAME="training.train flags"')
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=1, help="training runs at once")
    p.add_argument("--workers", type=int, default=2, help="data loader workers per run")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: torch's default)")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a run is given up")
    p.add_argument("--device", default="auto")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="passed on to every run of training.train")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipes = {name: flags + args.train_args for name, flags in args.recipe}
    jobs = [(name, seed) for seed in args.seeds for name in recipes]
    results: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def job(name: str, seed: int) -> None:
        record: dict = {"recipe": name, "seed": seed, "flags": recipes[name]}
        try:
            record["eval"] = train_run(args.data, out / f"{name}-s{seed}", recipes[name], seed, args.workers,
                                       args.threads, args.device, args.timeout)
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            record["error"] = f"{type(e).__name__}: {e}"
        record["finished_s"] = round(time.perf_counter() - start, 1)
        with lock:
            results.append(record)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "eval"}
                             | {"R@1": record.get("eval", {}).get("ata", {}).get("R@1")}), flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda j: job(*j), jobs))
    text = table(results, recipes)
    print(text)
    print(f"wall {time.perf_counter() - start:.0f} s")
    (out / "table.md").write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
