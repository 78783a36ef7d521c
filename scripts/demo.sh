#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains a GPT with Ouroboros (K = 3 modules on
# 2 worker threads) on the fortunes corpus, evaluates it, samples from it and plots its curves.
# Extra arguments go to `ouroboros train`, e.g. --steps 6000 to train longer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh > /dev/null
bin=build/ouroboros
out=runs/demo
prev=""
for a in "$@"; do [[ $prev == --out-dir ]] && out=$a; prev=$a; done  # eval and sample read it

# The demo's settings; a flag given on the command line replaces its default here.
defaults=(--modules 3 --n-layer 6 --n-head 4 --n-embd 128 --block-size 128 --batch-size 8
  --steps 3000 --lr 6e-4 --warmup-steps 200 --eval-interval 500 --eval-batches 20
  --log-interval 100 --out-dir "$out")
given=" $* "
args=()
for ((i = 0; i < ${#defaults[@]}; i += 2)); do
  [[ $given == *" ${defaults[i]} "* || $given == *" ${defaults[i]}="* ]] && continue
  args+=("${defaults[i]}" "${defaults[i + 1]}")
done
# Each run of the demo replaces the last one (train refuses a used out-dir otherwise), unless it
# continues it with --resume.
[[ $given == *" --resume "* ]] || args+=(--overwrite)

$bin train "${args[@]}" "$@"
echo
echo "== evaluation on the test split"
$bin eval --checkpoint "$out/ckpt.pt" --split test
echo
echo "== sample"
$bin generate --checkpoint "$out/ckpt.pt" --prompt "The " --tokens 300 --temperature 0.8 --top-k 20 |
  tee "$out/sample.txt"
echo
echo "== curves"
$bin plot "$out" --out "$out/curves.png"
