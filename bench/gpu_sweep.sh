#!/usr/bin/env bash
# The recipe sweep we ran on a lent GPU (one H100, 16 cores): Lite0 MGA recipes over three seeds, 16 runs at
# once, one CPU thread and one loader worker each (augmentation, not the GPU, is the bottleneck); 24 runs took
# 520 s. d288-det50 ran in a second, shorter call (3 runs, 3 workers each). Results: docs/experiments.md.
# Usage: bench/gpu_sweep.sh DATA OUT [bench.sweep flags, e.g. --timeout 480 --train-args --epochs 1]
set -euo pipefail
data=$1; out=$2; shift 2
# every flag spelled out, so that the recipes do not move with training.train's defaults
e40="--epochs 40 --freeze-blocks 3"
d288="$e40 --image-size 288 --detail 0.25"
python -m bench.sweep --data "$data" --out "$out" --seeds 0 1 2 --parallel "${PARALLEL:-16}" --workers 1 --threads 1 \
  --recipe base="$e40 --image-size 224 --detail 0" \
  --recipe detail="$e40 --image-size 224 --detail 0.25" \
  --recipe d288="$d288" \
  --recipe d288-det50="$e40 --image-size 288 --detail 0.5" \
  --recipe d320="$e40 --image-size 320 --detail 0.25" \
  --recipe d288-full="$d288 --freeze-blocks 0" \
  --recipe d288-proxy="$d288 --w-proxy 0.1" \
  --recipe d288-e60="$d288 --epochs 60" \
  --recipe d288-global-only="$d288 --w-coarse 0 --w-ata 0 --w-div 0" \
  "$@"
