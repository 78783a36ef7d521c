#!/usr/bin/env bash
# Experiment "micro_batches": Ouroboros K = 3 on 2 worker threads (1 intra-op thread each) with the
# batch cut into M = 1, 2, 4, 8 micro-batches, on the planner's cut and on the cut with no block
# at delay 2 (--partition 0,3: module 1 holds only the embedding), against sequential backprop
# (1 thread) and GPipe (M = 4) on the same workers, run alternately in one go. Reports tokens/s,
# the ratios to Ouroboros M = 1 on the planner's cut, and what the cost model predicts for each.
# Model: the benchmark GPT, L=6, H=4, C=256, T=128, B=8, V=256, Muon (the default optimizer).
# Env: OUT (bench/results/micro_batches.md), BUILD_DIR (build), PYTHON (/usr/bin/python3), STEPS
# (30), WARMUP (4), ROUNDS (3), MS ("1 2 4 8").
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-30}"
warmup="${WARMUP:-4}"
rounds="${ROUNDS:-3}"
read -r -a ms <<<"${MS:-1 2 4 8}"
out="${OUT:-bench/results/micro_batches.md}"
shape=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128)
model=("${shape[@]}" --batch-size 8 --vocab 256)

[[ -f "$build_dir/CMakeCache.txt" ]] || cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j2 --target bench_step ouroboros >/dev/null
bench="$build_dir/bench/bench_step"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A sides=([seq1]="--threads 1 --modules 1"
                  [gpipe]="--threads 1 --modules 3 --partition auto --mode gpipe --micro-batches 4")
order=(seq1 gpipe)
for m in "${ms[@]}"; do
  sides[auto_$m]="--threads 1 --modules 3 --partition auto --micro-batches $m"
  sides[nodelay2_$m]="--threads 1 --modules 3 --partition 0,3 --micro-batches $m"
  order+=("auto_$m" "nodelay2_$m")
done
for r in $(seq "$rounds"); do
  for s in "${order[@]}"; do
    # shellcheck disable=SC2086
    "$bench" ${sides[$s]} --steps "$steps" --warmup "$warmup" --whole "${model[@]}" >"$tmp/$s.$r.json"
    echo "round $r $s: $(cut -c1-100 "$tmp/$s.$r.json")" >&2
  done
done
for m in "${ms[@]}"; do
  for cut in auto 0,3; do
    "$build_dir/ouroboros" plan "${shape[@]}" --modules 3 --partition "$cut" --vocab-size 256 \
      --batch-size 8 --micro-batches "$m" --ticks 0 >"$tmp/plan.$cut.$m.txt"
  done
done

"$python" - "$tmp" "$rounds" "$load_before" "$steps" "$warmup" "${ms[*]}" <<'PY' | tee "$out"
import json, re, statistics, subprocess, sys, datetime
tmp, rounds, load, steps, warmup, ms = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6], sys.argv[6].split()
def tps(side):
    return statistics.median(json.load(open(f"{tmp}/{side}.{r}.json"))["tokens_per_s"]
                             for r in range(1, rounds + 1))
def predicted(cut, m):
    text = open(f"{tmp}/plan.{cut}.{m}.txt").read()
    return float(re.search(r"speed-up ([0-9.]+)x", text).group(1))
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
base = tps("auto_1")
seq = tps("seq1")
print("# micro_batches\n")
print("GPT L=6, H=4, C=256, T=128, B=8, V=256, Muon. Ouroboros K=3 on 2 worker threads x 1 intra-op "
      f"thread; {warmup} warm-up and {steps} timed steps in one call per side; median over {rounds} "
      "alternating rounds.\n")
print(f"Machine: {name}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} "
      f"cores; {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average before: {load}\n")
print("| method | cut | M | tokens/s | vs Ouroboros M=1 planner cut | vs sequential 1 thread | "
      "cost model's speed-up over sequential |")
print("|---|---|---|---|---|---|---|")
print(f"| sequential, 1 thread | - | - | {seq:.0f} | {seq/base:.2f}x | 1.00x | 1.00x |")
g = tps("gpipe")
print(f"| GPipe K=3 | planner | 4 | {g:.0f} | {g/base:.2f}x | {g/seq:.2f}x | - |")
for cut, label in (("auto", "planner"), ("0,3", "0,3 (no delay 2)")):
    for m in ms:
        v = tps(("auto_" if cut == "auto" else "nodelay2_") + m)
        print(f"| Ouroboros K=3 | {label} | {m} | {v:.0f} | {v/base:.2f}x | {v/seq:.2f}x | "
              f"{predicted(cut, m):.2f}x |")
PY
