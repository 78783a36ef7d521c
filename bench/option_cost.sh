#!/usr/bin/env bash
# Experiment "option_cost": the per-step cost of each delay-tolerant option over plain Ouroboros
# (K = 3 on 2 worker threads, 1 intra-op thread each) on the engine benchmark model. Each round
# times every variant once with `ouroboros bench --modes ouroboros` (untimed warm-up steps, then
# timed steps); the variants alternate within a round, and the report takes the median over
# rounds. Writes bench/results/option_cost.md.
# Env: BUILD_DIR (build), ROUNDS (5), STEPS (30), OUT (bench/results/option_cost.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
rounds="${ROUNDS:-5}"
steps="${STEPS:-30}"
out="${OUT:-bench/results/option_cost.md}"
cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
bin="$build_dir/ouroboros"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load=$(cut -d' ' -f1-3 /proc/loadavg)
variants=("plain|--weight-predict none"
          "weight prediction|--weight-predict optimizer"
          "PipeMare learning rate|--weight-predict none --stale-lr pipemare"
          "QHAdam|--weight-predict none --optimizer qhadam"
          "NAdam|--weight-predict none --optimizer nadam"
          "prediction + per-module statistics every step|--weight-predict optimizer --diagnostics-interval 1")
for ((r = 1; r <= rounds; r++)); do
  for i in "${!variants[@]}"; do
    read -r -a flags <<<"${variants[i]#*|}"
    "$bin" bench --modes ouroboros --steps "$steps" --warmup 4 --out-dir "$tmp/r$r-v$i" "${flags[@]}" >/dev/null
    echo "round $r: ${variants[i]%%|*} done" >&2
  done
done
python3 - "$tmp" "$rounds" "$load" "${variants[@]}" <<'PY' | tee "$out"
import datetime, json, statistics, sys
tmp, rounds, load, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
ms = {i: [json.load(open(f"{tmp}/r{r}-v{i}/bench.json"))["runs"][0]["ms_per_step"] for r in range(1, rounds + 1)]
      for i in range(len(variants))}
cpu = open("/proc/cpuinfo").read()
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
print("# option_cost\n")
print("GPT L=6, H=4, C=256, T=128, B=8, V=256, Adam unless named; Ouroboros K = 3 on 2 worker threads, "
      f"1 intra-op thread each; median ms per step over {rounds} alternating rounds.\n")
print(f"Machine: {cpu}, 2 cores; {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average before: {load}\n")
print("| variant | flags | ms/step (median) | per round | vs plain |")
print("|---|---|---|---|---|")
base = statistics.median(ms[0])
for i, v in enumerate(variants):
    name, flags = v.split("|", 1)
    med = statistics.median(ms[i])
    print(f"| {name} | `{flags}` | {med:.1f} | {', '.join(f'{x:.0f}' for x in ms[i])} | {100*(med/base-1):+.1f}% |")
PY
