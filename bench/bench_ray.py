"""Index build throughput on a local Ray (N workers) against the single-process build, measured in one run.

    python -m bench.bench_ray [--data ../shared/data/luma-inshop] [--ray-workers 2] [--rounds 2] [--zoom-grid 4]

Builds the index of the Luma gallery split (183 studio photos, zoom views by default) alternately with this
process (`LocalRunner`, the device's defaults) and with `--ray-workers` Ray actors on a local Ray started for
each build (`RayRunner`), and prints images/s of both, end to end (Ray's start-up and shutdown included) and of
the encode phase alone, and their ratio (Ray / single process), median over `--rounds`. Alternating cancels a
drift of the shared machine's speed. Needs Ray (`pip install -r requirements-scale.txt`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index_builder import build_index  # noqa: E402
from index_builder.distributed import DEFAULT_RAY_WORKERS, RayRunner  # noqa: E402
from mga.config import SHARED_DATA  # noqa: E402
from mga.hub import load_model  # noqa: E402
from mga.views import ZoomViews  # noqa: E402


def timed_build(gallery: str, model, zoom: ZoomViews, runner) -> tuple[float, float, int]:
    """(images/s end to end, images/s of the encode phase, images) of one build into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        man = build_index(gallery, Path(tmp) / "ix", model=model, zoom=zoom, runner=runner, progress=False,
                          log=lambda m: None)
        total = time.perf_counter() - t
    n = man["counts"]["images"]
    return n / total, n / man["build"]["encode_seconds"], n


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED_DATA / "luma-inshop"))
    p.add_argument("--weights")
    p.add_argument("--ray-workers", type=int, default=DEFAULT_RAY_WORKERS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid)
    args = p.parse_args()
    model = load_model(args.weights)
    zoom = ZoomViews(grid=args.zoom_grid)
    runners = {"single process": None, f"ray, {args.ray_workers} workers": RayRunner(workers=args.ray_workers)}
    speeds: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name, runner in runners.items():
            total, encode, n = timed_build(args.data, model, zoom, runner)
            speeds[name].append((total, encode))
            print(f"round {r + 1}, {name}: {n} images, {total:.2f} images/s end to end, {encode:.2f} images/s "
                  f"encoding", flush=True)
    (local, ray_name) = runners
    for j, what in enumerate(("end to end", "encoding")):
        ratios = [speeds[ray_name][i][j] / speeds[local][i][j] for i in range(args.rounds)]
        print(f"RESULT {what}: {ray_name} / single process = {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}] over {args.rounds} rounds ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
