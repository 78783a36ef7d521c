#!/usr/bin/env bash
# Experiment "muon_study": Muon against Adam, with and without delays, at the demo's shape and the
# default learning rates, on fortunes and on a held-out corpus nothing was tuned on (the King
# James Bible, bench/heldout_corpus.sh). docs/DELAY.md section 4.7 reads its results.
#   1. fortunes: plain backprop with Adam (lr 1e-3, the default; 2e-3 and 4e-3) and with Muon at
#      --muon-lr 1e-3,
#      2e-3, 4e-3 and 8e-3 (the sweep that set the default); Ouroboros K = 3 with Adam and weight
#      prediction (the earlier default), and with Muon at 8e-3: alone, with prediction along its
#      last update, and with prediction and the delay correction.
#   2. the held-out corpus: plain backprop with Adam and with Muon 8e-3, Ouroboros with each
#      (prediction on, the default in mode ouroboros).
#   3. time per step of each method with each optimizer (`ouroboros bench`, 1 thread per worker),
#      alone on the machine.
# Training runs go through bench/delay_study.sh (PHASE=train; packed onto the cores, losses
# deterministic); results: OUT/muon_fortunes/, OUT/muon_kjv/ (each arm's metrics under WORK),
# OUT/muon_bench_{adam,muon}/bench.json, and OUT/muon_study.md (the table of final losses).
# Env: BUILD_DIR (build), OUT (bench/results), WORK (build), STEPS (1000), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
out="${OUT:-bench/results}"
work="${WORK:-build}"
python="${PYTHON:-python3}"
cmake --build "$build_dir" -j2 --target ouroboros > /dev/null
binary="$build_dir/ouroboros"
demo="--n-layer 6 --n-head 4 --n-embd 128 --block-size 128 --batch-size 8"
m8="--optimizer muon --muon-lr 8e-3"
export BINARY="$binary" STEPS="${STEPS:-1000}" LR=1e-3 WARMUP=200 PHASE=train

arms="sync_adam=--modules 1 --optimizer adam"
for x in 1 2 4 8; do
  [ "$x" = 1 ] && name=sync_muon || name="sync_muon_lr${x}x"
  arms+=";$name=--modules 1 --optimizer muon --muon-lr ${x}e-3"
done
arms+=";ouro_adam_predict=--modules 3 --optimizer adam"
arms+=";ouro_muon_lr8x=--modules 3 $m8 --weight-predict none"
arms+=";ouro_muon_predict_lr8x=--modules 3 $m8"
arms+=";ouro_muon_predict_correct_lr8x=--modules 3 $m8 --delay-correction extrapolate"
MODEL="$demo --format fortunes" WORK="$work/muon_fortunes" OUT="$out/muon_fortunes" ARMS="$arms" \
  bench/delay_study.sh
# Adam's own sweep (--lr is common to every arm of one study, so one study per rate).
for x in 2 4; do
  LR="${x}e-3" MODEL="$demo --format fortunes" WORK="$work/muon_fortunes" OUT="$out/muon_fortunes" \
    ARMS="sync_adam_lr${x}x=--modules 1 --optimizer adam" bench/delay_study.sh
done

kjv=$(bench/heldout_corpus.sh)
arms="sync_adam=--modules 1 --optimizer adam;sync_muon_lr8x=--modules 1 $m8"
arms+=";ouro_adam_predict=--modules 3 --optimizer adam;ouro_muon_predict_lr8x=--modules 3 $m8"
MODEL="$demo --format text --data $kjv" WORK="$work/muon_kjv" OUT="$out/muon_kjv" ARMS="$arms" \
  bench/delay_study.sh

for opt in adam muon; do
  flags=(--optimizer "$opt")
  [ "$opt" = muon ] && flags+=(--muon-lr 8e-3)
  # shellcheck disable=SC2086
  "$binary" bench $demo --vocab-size 96 --modules 3 "${flags[@]}" --steps 30 \
    --out-dir "$out/muon_bench_$opt" > "$out/muon_bench_$opt.txt"
done

"$python" - "$work" "$out" <<'PY'
import json, os, sys
work, out = sys.argv[1:3]
def final(corpus, arm):
    path = f"{work}/muon_{corpus}/{arm}/metrics.jsonl"
    if not os.path.exists(path):
        return None
    rows = [json.loads(l) for l in open(path)]
    valid = [r["loss"] for r in rows if r.get("split") == "valid"]
    return valid[-1] if valid else None
arms = ["sync_adam", "sync_adam_lr2x", "sync_adam_lr4x", "sync_muon", "sync_muon_lr2x", "sync_muon_lr4x", "sync_muon_lr8x",
        "ouro_adam_predict", "ouro_muon_lr8x", "ouro_muon_predict_lr8x",
        "ouro_muon_predict_correct_lr8x"]
lines = ["# muon_study\n", "Final validation loss (full valid split) after 1000 steps; GPT L=6, C=128, "
         "T=128, B=8, char level; lr 1e-3 (AdamW part), 200 warm-up steps, cosine.\n",
         "| arm | fortunes | vs best plain | held-out (KJV) | vs best plain |", "|---|---|---|---|---|"]
best = {c: min(v for v in (final(c, a) for a in arms if a.startswith("sync")) if v) for c in ("fortunes", "kjv")}
for a in arms:
    cells = []
    for c in ("fortunes", "kjv"):
        v = final(c, a)
        cells += ["-", "-"] if v is None else [f"{v:.4f}", f"{100 * (v / best[c] - 1):+.1f}%"]
    lines.append(f"| {a} | " + " | ".join(cells) + " |")
open(f"{out}/muon_study.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
