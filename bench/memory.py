"""Peak extra memory of the app's worst-case queries, against the process's own baseline in the same run.

    python -m bench.memory [--index DIR] [--concurrency 8] [--json out.json]

The worst case a visitor can send within the limits (config.MAX_IMAGE_PIXELS, the upload size cap) is a small,
highly compressed, huge image: a 7000x8000 16-bit greyscale PNG is 127 kB on disk and 56 MP decoded. Each
scenario runs in a fresh process that loads the engine, answers one ordinary query (the baseline: what a warm
app holds), then sends the worst case through the app's own search function, once and then `--concurrency` at
once from as many threads (the app's queue runs that many searches side by side). Resident memory is sampled
every millisecond; "peak extra" is the highest sample minus the baseline, "kept" what is still resident after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mga.config import DEFAULT_INDEX_DIR, SHARED_DATA

PAGE = os.sysconf("SC_PAGE_SIZE")
ORDINARY_QUERY = SHARED_DATA / "luma-inshop"


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


class PeakSampler:
    """Highest resident memory seen while the block runs (sampled from another thread)."""

    def __enter__(self) -> "PeakSampler":
        self.peak, self._stop = resident_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_mb())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_mb())


def worst_case_png(path: Path, width: int = 7000, height: int = 8000) -> Path:
    Image.fromarray(np.full((height, width), 1000, dtype=np.uint16)).save(path)
    return path


def scenario(index: str, query: str, ordinary: str, concurrency: int) -> dict:
    """Runs in its own process: the engine's baseline, then `concurrency` worst-case searches at once."""
    from ui.results import run_search
    from ui.settings import load_engine

    loaded = load_engine(None, index)
    run_search(loaded, ordinary)  # warm: every buffer of an ordinary search exists
    baseline = resident_mb()
    with PeakSampler() as sampler, ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: len(run_search(loaded, query).result.matches), range(concurrency)))
    return {"baseline_mb": round(baseline, 1), "peak_extra_mb": round(sampler.peak - baseline, 1),
            "kept_mb": round(resident_mb() - baseline, 1), "matches": results}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR))
    p.add_argument("--concurrency", type=int, default=8, help="searches at once in the second scenario")
    p.add_argument("--json")
    p.add_argument("--scenario", type=int, help=argparse.SUPPRESS)  # internal: run one scenario, print JSON
    p.add_argument("--query", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ordinary = str(sorted(ORDINARY_QUERY.rglob("*.jpg"))[0])
    if args.scenario:
        print(json.dumps(scenario(args.index, args.query, ordinary, args.scenario)))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        query = worst_case_png(Path(tmp) / "grey16-7000x8000.png")
        size_kb = query.stat().st_size / 1e3
        rows = {}
        for n in (1, args.concurrency):
            out = subprocess.run([sys.executable, "-m", "bench.memory", "--index", args.index, "--scenario", str(n),
                                  "--query", str(query)], capture_output=True, text=True, check=True)
            rows[n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"worst-case query: 16-bit greyscale PNG, 7000x8000, {size_kb:.0f} kB on disk")
    print(f"{'searches at once':>17} {'baseline MB':>12} {'peak extra MB':>14} {'per search MB':>14} {'kept MB':>8}")
    for n, r in rows.items():
        print(f"{n:>17} {r['baseline_mb']:>12.0f} {r['peak_extra_mb']:>14.0f} {r['peak_extra_mb'] / n:>14.0f} "
              f"{r['kept_mb']:>8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
