#!/usr/bin/env bash
# Experiment "micro_batches": Ouroboros K = 3 on 2 worker threads (1 intra-op thread each): the
# default plan (--partition auto --micro-batches auto), the whole-batch planner cut {2,5} that was
# the default before micro-batches, and the cut with no block at delay 2 (--partition 0,3) with
# M = 1, 2, 4 pieces, against sequential backprop (1 thread) and GPipe (M = 4) on the same workers,
# run alternately in one go. Reports tokens/s, the ratios to the {2,5} whole-batch cut, and what
# the cost model predicts for each.
# MODEL=benchmark (default): GPT L=6, H=4, C=256, T=128, B=8, V=256; MODEL=demo: C=128, V=96 (the
# demo's shape, char-level fortunes' vocabulary). Muon (the default optimizer), random tokens.
# Env: OUT (bench/results/micro_batches[_demo].md), BUILD_DIR (build), PYTHON (/usr/bin/python3),
# STEPS (30), WARMUP (4), ROUNDS (3), MS ("1 2 4").
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-30}"
warmup="${WARMUP:-4}"
rounds="${ROUNDS:-3}"
read -r -a ms <<<"${MS:-1 2 4}"
case "${MODEL:-benchmark}" in
  benchmark) width=256 vocab=256 suffix="" ;;
  demo) width=128 vocab=96 suffix=_demo ;;
  *) echo "error: MODEL must be benchmark or demo, got '$MODEL'" >&2; exit 2 ;;
esac
out="${OUT:-bench/results/micro_batches$suffix.md}"
shape=(--n-layer 6 --n-head 4 --n-embd "$width" --block-size 128)
model=("${shape[@]}" --batch-size 8 --vocab "$vocab")

[[ -f "$build_dir/CMakeCache.txt" ]] || cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j2 --target bench_step ouroboros >/dev/null
bench="$build_dir/bench/bench_step"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A sides=([seq1]="--threads 1 --modules 1"
                  [gpipe]="--threads 1 --modules 3 --partition auto --mode gpipe --micro-batches 4"
                  [default]="--threads 1 --modules 3"
                  [old]="--threads 1 --modules 3 --partition 2,5 --micro-batches 1")
declare -A plans=([default]="" [old]="--partition 2,5 --micro-batches 1")
order=(seq1 gpipe old default)
for m in "${ms[@]}"; do
  sides[cut03_$m]="--threads 1 --modules 3 --partition 0,3 --micro-batches $m"
  plans[cut03_$m]="--partition 0,3 --micro-batches $m"
  order+=("cut03_$m")
done
for r in $(seq "$rounds"); do
  for s in "${order[@]}"; do
    # shellcheck disable=SC2086
    "$bench" ${sides[$s]} --steps "$steps" --warmup "$warmup" --whole "${model[@]}" >"$tmp/$s.$r.json"
    echo "round $r $s: $(cut -c1-100 "$tmp/$s.$r.json")" >&2
  done
done
for s in "${!plans[@]}"; do
  # shellcheck disable=SC2086
  "$build_dir/ouroboros" plan "${shape[@]}" --modules 3 --vocab-size "$vocab" --batch-size 8 \
    ${plans[$s]} --ticks 0 >"$tmp/plan.$s.txt"
done

"$python" - "$tmp" "$rounds" "$load_before" "$steps" "$warmup" "${ms[*]}" "$width" "$vocab" <<'PY' | tee "$out"
import json, re, statistics, subprocess, sys, datetime
tmp, rounds, load, steps, warmup = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
ms, width, vocab = sys.argv[6].split(), sys.argv[7], sys.argv[8]
def tps(side):
    return statistics.median(json.load(open(f"{tmp}/{side}.{r}.json"))["tokens_per_s"]
                             for r in range(1, rounds + 1))
def plan(side):
    text = open(f"{tmp}/plan.{side}.txt").read()
    cut = re.search(r"module 2  blocks \[(\d+),(\d+)\)", text).groups()
    m = re.search(r"(\d+) micro-batches", text)
    return (float(re.search(r"speed-up ([0-9.]+)x", text).group(1)), "{%s,%s}" % cut,
            m.group(1) if m else "1", re.search(r"block-ticks: (\d+)", text).group(1))
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
base, seq = tps("old"), tps("seq1")
print("# micro_batches\n")
print(f"GPT L=6, H=4, C={width}, T=128, B=8, V={vocab}, Muon, random tokens. Ouroboros K=3 on 2 "
      f"worker threads x 1 intra-op thread; {warmup} warm-up and {steps} timed steps in one call "
      f"per side; median over {rounds} alternating rounds.\n")
print(f"Machine: {name}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} "
      f"cores; {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average before: {load}\n")
print("| method | cut | M | delayed block-ticks | tokens/s | vs Ouroboros {2,5} M=1 | "
      "vs sequential 1 thread | cost model's speed-up |")
print("|---|---|---|---|---|---|---|---|")
print(f"| sequential, 1 thread | - | - | 0 | {seq:.0f} | {seq/base:.2f}x | 1.00x | 1.00x |")
g = tps("gpipe")
print(f"| GPipe K=3 | fastest | 4 | 0 | {g:.0f} | {g/base:.2f}x | {g/seq:.2f}x | - |")
rows = [("old", "Ouroboros K=3, the whole-batch cut (the earlier default)"),
        ("default", "Ouroboros K=3, default plan")] + \
       [("cut03_" + m, "Ouroboros K=3") for m in ms]
for side, label in rows:
    v = tps(side)
    speed, cut, m, ticks = plan(side)
    print(f"| {label} | {cut} | {m} | {ticks} | {v:.0f} | {v/base:.2f}x | {v/seq:.2f}x | {speed:.2f}x |")
PY
