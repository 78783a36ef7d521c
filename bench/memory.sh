#!/usr/bin/env bash
# Experiment "memory": peak resident memory and tokens/s of each method, and of Ouroboros with
# and without recomputation (--recompute delayed), against plain backprop in the same run. Every
# side is a process of its own (bench/bench_step), so its peak RSS is its own; sides alternate
# over ROUNDS rounds and the table shows medians.
# MODEL=benchmark (default): GPT L=6, H=4, C=256, T=128, B=8, V=256 (the benchmark model).
# MODEL=gpt38m: GPT L=12, H=8, C=512, T=128, B=8, V=256 (38M weights), fewer steps.
# Ouroboros runs K = 3 on 2 worker threads with its default plan (cut and micro-batches from the
# cost model); GPipe K = 3 with 4 micro-batches; data parallelism 2 replicas. Every worker uses
# one intra-op thread; plain backprop is shown with 1 and with 2.
# Env: BUILD_DIR (build), STEPS, WARMUP, ROUNDS, OUT (bench/results/memory_<MODEL>.md), SIDES (a
# subset of: seq1 ouro ouro_rc gpipe dp seq2; seq1, the baseline, first).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
family="${MODEL:-benchmark}"
case "$family" in
  benchmark)
    shape=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128)
    desc="GPT L=6, H=4, C=256, T=128, B=8, V=256 (the benchmark model), Adam, clip 1.0"
    steps="${STEPS:-20}" warmup="${WARMUP:-4}" rounds="${ROUNDS:-3}" ;;
  gpt38m)
    shape=(--n-layer 12 --n-head 8 --n-embd 512 --block-size 128)
    desc="GPT L=12, H=8, C=512, T=128, B=8, V=256 (38M weights), Adam, clip 1.0"
    steps="${STEPS:-4}" warmup="${WARMUP:-2}" rounds="${ROUNDS:-1}" ;;
  *) echo "error: MODEL must be benchmark or gpt38m, got '$family'" >&2; exit 2 ;;
esac
out="${OUT:-bench/results/memory_$family.md}"
cmake --build "$build_dir" -j2 --target bench_step ouroboros >/dev/null
bench="$build_dir/bench/bench_step"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A sides=(
  [seq1]="--threads 1 --modules 1"
  [seq2]="--threads 2 --modules 1"
  [ouro]="--threads 1 --modules 3"
  [ouro_rc]="--threads 1 --modules 3 --recompute delayed"
  [gpipe]="--threads 1 --modules 3 --mode gpipe --micro-batches 4"
  [dp]="--threads 1 --mode data-parallel --workers 2"
)
read -r -a order <<<"${SIDES:-seq1 ouro ouro_rc gpipe dp seq2}"
for r in $(seq "$rounds"); do
  for s in "${order[@]}"; do
    echo "memory: round $r, $s" >&2
    # shellcheck disable=SC2086
    "$bench" ${sides[$s]} "${shape[@]}" --batch-size 8 --vocab 256 --steps "$steps" \
      --warmup "$warmup" --whole >>"$tmp/$s.jsonl"
  done
done

# The estimate `plan` prints (and train checks) for each side, in MiB.
for s in "${order[@]}"; do
  # shellcheck disable=SC2086
  "$build_dir/ouroboros" plan ${sides[$s]} "${shape[@]}" --batch-size 8 --vocab-size 256 \
    --optimizer adam --ticks 0 | sed -nE 's/^memory estimate: ([0-9]+) MiB.*/\1/p' >"$tmp/$s.estimate"
done

python3 - "$tmp" "$out" "$desc" "$steps" "$warmup" "$rounds" "${order[@]}" <<'EOF'
import json, statistics, subprocess, sys, datetime, os
tmp, out, desc, steps, warmup, rounds, *order = sys.argv[1:]
names = dict(seq1="plain backprop, 1 intra-op thread", seq2="plain backprop, 2 intra-op threads",
             ouro="Ouroboros K=3, 2 workers", ouro_rc="Ouroboros K=3, 2 workers, --recompute delayed",
             gpipe="GPipe K=3 M=4, 2 workers", dp="data parallelism, 2 replicas")
cores = dict(seq1=1, seq2=2, ouro=2, ouro_rc=2, gpipe=2, dp=2)
runs = {s: [json.loads(l) for l in open(f"{tmp}/{s}.jsonl")] for s in order}
tps = {s: statistics.median(r["tokens_per_s"] for r in runs[s]) for s in order}
rss = {s: statistics.median(r["peak_rss_mib"] for r in runs[s]) for s in order}
est = {s: float(open(f"{tmp}/{s}.estimate").read()) for s in order}
cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
                     capture_output=True, text=True).stdout.strip()
lines = [f"# memory ({os.path.basename(out)})", "",
         f"{desc}. Each side is its own process: {warmup} warm-up and {steps} timed steps, "
         f"median over {rounds} alternating round(s).", "",
         f"Machine: {cpu}, {os.cpu_count()} cores; "
         f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC.", "",
         "| method | cores used | tokens/s | ratio to plain (1 thread) | peak RSS MiB | RSS ratio to plain | plan's estimate MiB | estimate / RSS |",
         "|---|---|---|---|---|---|---|---|"]
for s in order:
    lines.append(f"| {names[s]} | {cores[s]} | {tps[s]:.0f} | {tps[s] / tps['seq1']:.2f}x | "
                 f"{rss[s]:.0f} | {rss[s] / rss['seq1']:.2f}x | {est[s]:.0f} | {est[s] / rss[s]:.2f} |")
if "ouro" in tps and "ouro_rc" in tps:
    lines += ["", f"Recomputation: {tps['ouro_rc'] / tps['ouro']:.2f}x the tokens/s and "
              f"{rss['ouro_rc'] / rss['ouro']:.2f}x the peak RSS of Ouroboros keeping its "
              "activations."]
lines += ["", "Reproduce: `MODEL=" + ("gpt38m" if "38M" in desc else "benchmark") +
          f" ROUNDS={rounds} STEPS={steps} WARMUP={warmup} SIDES='{' '.join(order)}' bench/memory.sh`"]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
