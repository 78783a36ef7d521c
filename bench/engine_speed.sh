#!/usr/bin/env bash
# Experiment "engine_speed": Ouroboros (K = 3 modules on 2 worker threads, 1 intra-op thread each)
# against the reference trainer at 1 and at 2 intra-op threads, run alternately in one go, and
# two independent 1-thread runs at once (the ceiling of 2 workers that share nothing). Reports
# tokens/s, the ratios (median and per round), peak resident memory, and the share of time each
# worker waited on the transport.
# MODEL=gpt (default): GPT L=6, H=4, C=256, T=128, B=8, V=256, Adam, clip 1.0, plus GPipe (M = 4)
#   on the same workers; writes bench/results/engine_speed.md.
# MODEL=transformer-xl: Transformer-XL L=6, H=4, C=256, d_inner 1024, tgt_len = mem_len = 128,
#   B=8, V=256 (random segments carried through the memories); writes bench/results/xl_speed.md.
# Env: OUT (overrides the output file), BUILD_DIR (build), PYTHON (/usr/bin/python3), STEPS (30),
# WARMUP (4), ROUNDS (3), PARTITION (auto).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-30}"
warmup="${WARMUP:-4}"
rounds="${ROUNDS:-3}"
partition="${PARTITION:-auto}"
family="${MODEL:-gpt}"
shape=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128)
case "$family" in
  gpt)
    family_flags=()
    default_out=bench/results/engine_speed.md
    title="engine_speed"
    desc="GPT L=6, H=4, C=256, T=128, B=8, V=256, Adam, clip 1.0." ;;
  transformer-xl)
    family_flags=(--model transformer-xl --mem-len 128)
    default_out=bench/results/xl_speed.md
    title="xl_speed"
    desc="Transformer-XL L=6, H=4, C=256, d_inner 1024, tgt_len = mem_len = 128, B=8, V=256, Adam, clip 1.0." ;;
  *) echo "error: MODEL must be gpt or transformer-xl, got '$family'" >&2; exit 2 ;;
esac
model=("${family_flags[@]}" "${shape[@]}" --batch-size 8 --vocab 256)
out="${OUT:-$default_out}"

[[ -f "$build_dir/CMakeCache.txt" ]] || cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j2 --target bench_step ouroboros >/dev/null
bench="$build_dir/bench/bench_step"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# name: bench_step arguments. Every side runs all its steps in one run() call (--whole).
declare -A sides=(
  [seq1]="--threads 1 --modules 1"
  [seq2]="--threads 2 --modules 1"
  [ouro]="--threads 1 --modules 3 --partition $partition"
)
order=(seq1 ouro seq2 pair)
if [[ $family == gpt ]]; then
  # GPipe (M = 4 micro-batches, flush every step) on the same K - 1 = 2 workers and placement.
  sides[gpipe]="--threads 1 --modules 3 --partition $partition --mode gpipe --micro-batches 4"
  order+=(gpipe)
fi
for r in $(seq "$rounds"); do
  for s in "${order[@]}"; do
    if [[ $s == pair ]]; then
      # The ceiling for 2 workers: two independent 1-thread runs at once, nothing shared.
      # shellcheck disable=SC2086
      "$bench" ${sides[seq1]} --steps "$steps" --warmup "$warmup" --whole "${model[@]}" >"$tmp/pairA.$r.json" &
      # shellcheck disable=SC2086
      "$bench" ${sides[seq1]} --steps "$steps" --warmup "$warmup" --whole "${model[@]}" >"$tmp/pairB.$r.json"
      wait
      echo "round $r pair: $(cut -c1-120 "$tmp/pairA.$r.json")" >&2
      continue
    fi
    # shellcheck disable=SC2086
    "$bench" ${sides[$s]} --steps "$steps" --warmup "$warmup" --whole "${model[@]}" >"$tmp/$s.$r.json"
    echo "round $r $s: $(cut -c1-120 "$tmp/$s.$r.json")" >&2
  done
done
"$build_dir/ouroboros" plan "${family_flags[@]}" "${shape[@]}" --modules 3 --partition "$partition" \
  --vocab-size 256 --ticks 0 >"$tmp/plan.txt"

"$python" - "$tmp" "$rounds" "$load_before" "$steps" "$warmup" "$title" "$desc" <<'PY' | tee "$out"
import json, os, statistics, subprocess, sys, datetime
tmp, rounds, load, steps, warmup, title, desc = sys.argv[1], int(sys.argv[2]), *sys.argv[3:8]
def runs(side):
    return [json.load(open(f"{tmp}/{side}.{r}.json")) for r in range(1, rounds + 1)]
kinds = ["seq1", "seq2", "ouro"] + (["gpipe"] if os.path.exists(f"{tmp}/gpipe.1.json") else [])
res = {s: runs(s) for s in kinds}
tps = {s: statistics.median(r["tokens_per_s"] for r in v) for s, v in res.items()}
# Two independent runs at once: their summed tokens/s (both run the same steps side by side).
pair = [a["tokens_per_s"] + b["tokens_per_s"] for a, b in zip(runs("pairA"), runs("pairB"))]
tps["pair"] = statistics.median(pair)
rss = {s: max(r["peak_rss_mib"] for r in v) for s, v in res.items()}
wait = [statistics.median(r["transport_wait_share"][w] for r in res["ouro"]) for w in range(2)]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
plan = open(f"{tmp}/plan.txt").read().strip()
print(f"# {title}\n")
print(f"{desc} Each side runs "
      f"{warmup} warm-up and {steps} timed steps in one call; median over {rounds} alternating rounds.\n")
print(f"Machine: {model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
      f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average before: {load}\n")
print("| method | cores used | tokens/s | ratio to sequential 1 thread | ratio to sequential 2 threads | peak RSS MiB |")
print("|---|---|---|---|---|---|")
names = {"seq1": "sequential, 1 intra-op thread", "seq2": "sequential, 2 intra-op threads",
         "ouro": "Ouroboros K=3, 2 workers x 1 thread", "gpipe": "GPipe K=3 M=4, 2 workers x 1 thread"}
cores = {"seq1": 1, "seq2": 2, "ouro": 2, "gpipe": 2}
for s in kinds:
    print(f"| {names[s]} | {cores[s]} | {tps[s]:.0f} | {tps[s]/tps['seq1']:.2f}x | {tps[s]/tps['seq2']:.2f}x | {rss[s]:.0f} |")
print(f"| ceiling: two independent 1-thread runs at once (summed) | 2 | {tps['pair']:.0f} | "
      f"{tps['pair']/tps['seq1']:.2f}x | {tps['pair']/tps['seq2']:.2f}x | - |")
print("\nPer round (Ouroboros / sequential 1 thread, / sequential 2 threads, ceiling / sequential 1 "
      "thread): " + "; ".join(
          f"{o['tokens_per_s']/a['tokens_per_s']:.2f}x, {o['tokens_per_s']/b['tokens_per_s']:.2f}x, {p/a['tokens_per_s']:.2f}x"
          for o, a, b, p in zip(res["ouro"], res["seq1"], res["seq2"], pair)) + ".")
if "gpipe" in res:
    g = tps["gpipe"]
    print(f"\nOuroboros / GPipe: {tps['ouro']/g:.2f}x (median tokens/s; per round "
          + ", ".join(f"{o['tokens_per_s']/q['tokens_per_s']:.2f}x" for o, q in zip(res["ouro"], res["gpipe"]))
          + f"). No method on 2 workers can beat two runs that share nothing, so the most Ouroboros "
          f"could reach here is ceiling / GPipe = {tps['pair']/g:.2f}x.")
print(f"\nOuroboros workers waited on the transport {100*wait[0]:.0f}% (worker 0) and "
      f"{100*wait[1]:.0f}% (worker 1) of the run (pipeline fill included).\n")
print("Plan:\n\n```\n" + plan + "\n```")
PY
