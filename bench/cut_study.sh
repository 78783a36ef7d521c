#!/usr/bin/env bash
# Experiment "cut_study": what the cut costs in accuracy with Muon (the default optimizer) at the
# demo's shape and default learning rates, now that micro-batches make the cuts with fewer
# delayed blocks fast. Ouroboros K = 3 on the whole-batch planner's cut {2,5} (7 delayed
# block-ticks), on {1,4} with 2 micro-batches (5) and on {0,3} with 4 (3: no block at delay 2),
# against plain backprop with the same tokens, on fortunes and on the held-out corpus (the King
# James Bible, bench/heldout_corpus.sh). It shares bench/muon_study.sh's arms and work folders
# (finished arms are not run again: the plain-backprop and {2,5} arms are muon_study's).
# Training goes through bench/delay_study.sh (PHASE=train). Results: OUT/muon_fortunes/,
# OUT/muon_kjv/ (each arm's metrics under WORK); DELAY.md section 4.8 and BENCHMARKS.md read them.
# Env: BUILD_DIR (build), OUT (bench/results), WORK (build), STEPS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
out="${OUT:-bench/results}"
work="${WORK:-build}"
cmake --build "$build_dir" -j2 --target ouroboros > /dev/null
demo="--n-layer 6 --n-head 4 --n-embd 128 --block-size 128 --batch-size 8"
m8="--optimizer muon --muon-lr 8e-3"
export BINARY="$build_dir/ouroboros" STEPS="${STEPS:-1000}" LR=1e-3 WARMUP=200 PHASE=train
arms="sync_muon_lr8x=--modules 1 $m8"
arms+=";ouro_muon_predict_lr8x=--modules 3 $m8 --partition 2,5 --micro-batches 1"
arms+=";ouro_muon_cut14_m2=--modules 3 $m8 --partition 1,4 --micro-batches 2"
arms+=";ouro_muon_cut03_m4=--modules 3 $m8 --partition 0,3 --micro-batches 4"
MODEL="$demo --format fortunes" WORK="$work/muon_fortunes" OUT="$out/muon_fortunes" ARMS="$arms" \
  bench/delay_study.sh
kjv=$(bench/heldout_corpus.sh)
MODEL="$demo --format text --data $kjv" WORK="$work/muon_kjv" OUT="$out/muon_kjv" ARMS="$arms" \
  bench/delay_study.sh
