#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains a GPT with Ouroboros (K = 3 modules on
# 2 worker threads) on the fortunes corpus, evaluates it and samples from it.
# Extra arguments go to `ouroboros train`, e.g. --steps 3000 to train longer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh > /dev/null
bin=build/ouroboros
out=runs/demo

# Each run of the demo replaces the last one (train refuses a used out-dir otherwise), unless it
# continues it with --resume.
replace=(--overwrite)
for a in "$@"; do [[ $a == --resume ]] && replace=(); done

$bin train --modules 3 --n-layer 6 --n-head 4 --n-embd 128 --block-size 128 --batch-size 8 \
  --steps 1500 --lr 6e-4 --warmup-steps 200 --eval-interval 500 --eval-batches 20 \
  --log-interval 100 --out-dir "$out" "${replace[@]}" "$@"
echo
echo "== evaluation on the test split"
$bin eval --checkpoint "$out/ckpt.pt" --split test
echo
echo "== sample"
$bin generate --checkpoint "$out/ckpt.pt" --prompt "The " --tokens 300 --temperature 0.8 --top-k 20
