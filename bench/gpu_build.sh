#!/usr/bin/env bash
# Build throughput on a lent GPU (one H100, 16 cores): bench_build with the model on CUDA (bf16, forwards of
# config.FORWARD_BATCH["cuda"]), decoding processes on every core but one (config.LOADER_WORKERS), the gallery
# linked REPEAT times so that start-up does not dominate a measurement of seconds. Results: docs/benchmarks.md.
# Usage: bench/gpu_build.sh DATA [bench_build flags, e.g. --rounds 1]
set -euo pipefail
data=$1; shift
python -m bench.bench_build --data "$data" --device cuda --repeat "${REPEAT:-8}" --rounds 2 "$@"
