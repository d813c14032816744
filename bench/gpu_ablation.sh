#!/usr/bin/env bash
# The ablation matrix we ran on a lent GPU (one H200, 16 cores), several training runs at once.
# Usage: bench/gpu_ablation.sh DATA OUT
# The CPU default's recipe (20 epochs, stem + first 3 backbone blocks frozen) for every variant over three
# seeds; EfficientNet-Lite2 under the same recipe; a longer, fully fine-tuned Lite0 for comparison.
set -euo pipefail
data=$1; out=$2
epochs=${EPOCHS:-20}
mkdir -p "$out"
run() { name=$1; shift; python -m bench.ablation --data "$data" --out "$out/$name" "$@" > "$out/$name.log" 2>&1; }
run lite0 --seeds 0 1 2 --epochs "$epochs" --parallel 6 --workers 2 --train-args --freeze-blocks 3 &
run lite2 --backbones tf_efficientnet_lite2 --variants mga --seeds 0 1 --epochs "$epochs" --parallel 2 \
  --workers 2 --train-args --freeze-blocks 3 &
run lite0-long --variants mga --seeds 0 1 --epochs $((2 * epochs)) --parallel 2 --workers 2 &
wait
tail -n 12 "$out"/*.log
