#!/usr/bin/env bash
# Build throughput on a lent GPU (one H100, 16 cores): bench_build with the model on CUDA (bf16, forwards of
# config.FORWARD_BATCH["cuda"]), WORKERS decoding processes, the gallery linked REPEAT times so that start-up
# does not dominate a measurement of seconds. Results: README, "Scale plan".
# Usage: bench/gpu_build.sh DATA [bench_build flags, e.g. --rounds 1]
set -euo pipefail
data=$1; shift
python bench/bench_build.py --data "$data" --device cuda --workers "${WORKERS:-15}" --repeat "${REPEAT:-8}" \
  --rounds 2 "$@"
