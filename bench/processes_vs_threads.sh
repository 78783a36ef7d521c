#!/usr/bin/env bash
# Experiment "processes_vs_threads": Ouroboros K = 3 on 2 workers as 2 worker threads of one
# process against 2 worker processes over c10d/Gloo on loopback (`ouroboros launch --nproc 2`),
# 1 intra-op thread per worker, on the engine benchmark model (GPT L=6, H=4, C=256, T=128, B=8,
# byte vocabulary, Adam). Reports tokens/s of each (median of the progress lines after the first
# interval, evaluation excluded), the ratio (target >= 0.9x), and per process the bytes sent per
# tick and the time spent waiting on the transport.
# Writes bench/results/processes_vs_threads.md (MODEL=transformer-xl: the same shape as
# Transformer-XL with a 128-token memory, into processes_vs_threads_xl.md; METHOD=data-parallel:
# the threaded data-parallel mode against one process per replica, into ..._dp.md; METHOD=gpipe:
# GPipe with 4 micro-batches, into ..._gpipe.md). Env: BUILD_DIR (build),
# PYTHON (/usr/bin/python3), STEPS (60), ROUNDS (2), PORT (29517), SMALL=1 for a quick check on a
# tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-60}"
rounds="${ROUNDS:-2}"
port="${PORT:-29517}"
if [[ "${SMALL:-0}" == 1 ]]; then
  model=(--n-layer 2 --n-head 2 --n-embd 32 --block-size 16)
  batch=4
  log_interval=2
else
  model=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128)
  batch=8
  log_interval=5
fi
arch="${MODEL:-gpt}"
case "$arch" in
  gpt) out=bench/results/processes_vs_threads.md ;;
  transformer-xl) model+=(--model transformer-xl --mem-len 128)
                  out=bench/results/processes_vs_threads_xl.md ;;
  *) echo "MODEL must be gpt or transformer-xl" >&2; exit 2 ;;
esac
# METHOD=data-parallel: the threaded --mode data-parallel with 2 workers on batch 2B against 2
# processes of --modules 1 --replicas 2 on batch B each (DDP): the same rows per step.
method="${METHOD:-ouroboros}"
case "$method" in
  ouroboros)
    threads_flags=(--modules 3 --partition auto --batch-size "$batch")
    procs_flags=("${threads_flags[@]}")
    label="Ouroboros K=3 on 2 workers" ;;
  data-parallel)
    threads_flags=(--mode data-parallel --workers 2 --batch-size $((2 * batch)))
    procs_flags=(--modules 1 --replicas 2 --batch-size "$batch")
    label="data parallelism on 2 replicas of batch $batch"
    out="${out%.md}_dp.md" ;;
  gpipe)
    threads_flags=(--mode gpipe --modules 3 --micro-batches 4 --batch-size "$batch")
    procs_flags=("${threads_flags[@]}")
    label="GPipe K=3 M=4 on 2 workers"
    out="${out%.md}_gpipe.md" ;;
  *) echo "METHOD must be ouroboros, gpipe or data-parallel" >&2; exit 2 ;;
esac
common=("${model[@]}" --format text --tokenizer byte --threads 1
        --optimizer adam --steps "$steps" --eval-interval 0 --log-interval "$log_interval")

[[ -f "$build_dir/CMakeCache.txt" ]] || cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
bin="$build_dir/ouroboros"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A byte-level corpus with a small valid split, so the final evaluation is short.
"$python" -c "
import random; random.seed(1)
w = 'the of and to in is was for on that with as by at from ring module delay gradient'.split()
print(' '.join(random.choice(w) for _ in range(60000)))" >"$tmp/corpus.txt"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for r in $(seq "$rounds"); do
  "$bin" train "${common[@]}" "${threads_flags[@]}" --data "$tmp/corpus.txt" --out-dir "$tmp/threads$r" >"$tmp/threads$r.log"
  echo "round $r threads: $(grep -c '^step' "$tmp/threads$r.log") progress lines" >&2
  "$bin" launch --nproc 2 --master-port "$port" -- train "${common[@]}" "${procs_flags[@]}" --data "$tmp/corpus.txt" \
    --out-dir "$tmp/procs$r" >"$tmp/procs$r.log"
  echo "round $r processes: $(grep -c '^step' "$tmp/procs$r.log") progress lines" >&2
done

"$python" - "$tmp" "$rounds" "$load_before" "$steps" "${SMALL:-0}" "$arch" "$label" "$batch" <<'PY' | tee "$out"
import json, re, statistics, subprocess, sys, datetime
tmp, rounds, load, steps, small = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
arch = "Transformer-XL (memory 128)" if sys.argv[6] == "transformer-xl" else "GPT"
label, batch = sys.argv[7], sys.argv[8]
def tps(run):
    rows = [json.loads(l) for l in open(f"{tmp}/{run}/metrics.jsonl")]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]  # first interval: pipeline fill
    return statistics.median(rates)
threads = statistics.median(tps(f"threads{r}") for r in range(1, rounds + 1))
procs = statistics.median(tps(f"procs{r}") for r in range(1, rounds + 1))
lines = [l.strip() for l in open(f"{tmp}/procs{rounds}.log") if l.startswith("transport rank")]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
print("# processes_vs_threads\n")
print(("TINY CHECK RUN (SMALL=1), not a measurement. " if small == "1" else "") +
      f"{arch} L=6, H=4, C=256, T=128, B={batch}, byte vocabulary, Adam; {label}, "
      f"1 intra-op thread each; {steps} steps, median tokens/s over the progress lines after the "
      f"first, median of {rounds} alternating rounds.\n")
print(f"Machine: {model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; "
      f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average before: {load}\n")
print("| workers as | tokens/s | ratio to threads |")
print("|---|---|---|")
print(f"| 2 threads, in-process transport | {threads:.0f} | 1.00x |")
print(f"| 2 processes, c10d Gloo over loopback | {procs:.0f} | {procs/threads:.2f}x (target >= 0.9x) |")
print("\nTransport of the last process run (whole run, pipeline fill and drains included):\n")
for l in lines: print(f"- {l}")
PY
