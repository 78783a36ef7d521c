#!/usr/bin/env bash
# Experiment "reference_vs_pytorch": one training step of the reference trainer (bench_step)
# against the same model in PyTorch (bench/gpt_pytorch.py, Debian's python3-torch, same libtorch)
# at 1 and 2 threads, run alternately in one go, with this machine's matrix-multiply peak.
# Model: L=4, H=4, C=256, T=128, B=8, V=256, Adam lr 1e-3, clip 1.0.
# FLOPs per step = 3 x forward, forward = 2*B*T*(12*L*C*C + C*V) + 4*L*B*T*T*C (matmuls only).
# Writes bench/results/reference_vs_pytorch.md. Env: BUILD_DIR (default build), PYTHON
# (default /usr/bin/python3; the pyenv python3 on PATH has no torch), STEPS, WARMUP, ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-30}"
warmup="${WARMUP:-5}"
rounds="${ROUNDS:-3}"
threads_list="${THREADS:-1 2}"
model=(--n-layer 4 --n-head 4 --n-embd 256 --block-size 128 --batch-size 8 --vocab 256)
out=bench/results/reference_vs_pytorch.md

# A build tree configured before bench_step.cpp existed lacks the target: configure, then retry.
if ! cmake --build "$build_dir" -j2 --target bench_step >/dev/null 2>&1; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" -j2 --target bench_step >/dev/null
fi
bench="$build_dir/bench/bench_step"

# field FILE KEY: the numeric value of "KEY" in a one-line JSON file.
field() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
median() { "$python" -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
calc() { "$python" -c "print(f'{$1:$2}')"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows=() control=()
for th in $threads_list; do
  "$bench" --peak --threads "$th" >"$tmp/peak$th.json"
  peak=$(field "$tmp/peak$th.json" gflops)
  peak_n=$(field "$tmp/peak$th.json" n)
  cpp=() py=() pym=()
  for r in $(seq "$rounds"); do
    # Alternating C++, Python, C++, ... so slow drift of the machine hits both sides alike.
    "$bench" --threads "$th" --steps "$steps" --warmup "$warmup" "${model[@]}" >"$tmp/c$th.$r.json"
    "$python" bench/gpt_pytorch.py --threads "$th" --steps "$steps" --warmup "$warmup" \
      "${model[@]}" >"$tmp/p$th.$r.json"
    # Control: PyTorch with the glibc malloc settings make_method applies (keep_freed_memory).
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 "$python" \
      bench/gpt_pytorch.py --threads "$th" --steps "$steps" --warmup "$warmup" "${model[@]}" \
      >"$tmp/m$th.$r.json"
    cpp+=("$(field "$tmp/c$th.$r.json" ms_per_step)")
    py+=("$(field "$tmp/p$th.$r.json" ms_per_step)")
    pym+=("$(field "$tmp/m$th.$r.json" ms_per_step)")
    echo "threads $th round $r: ouroboros $(calc "${cpp[-1]}" .1f) ms, pytorch $(calc "${py[-1]}" .1f) ms, pytorch+malloc $(calc "${pym[-1]}" .1f) ms" >&2
  done
  c=$(median "${cpp[@]}")
  p=$(median "${py[@]}")
  pm=$(median "${pym[@]}")
  control+=("| $th | $(calc "$c" .1f) | $(calc "$pm" .1f) | $(calc "$pm/$c" .3f) |")
  gf=$(field "$tmp/c$th.1.json" flop_per_step)
  gflops=$(calc "$gf/($c/1e3)/1e9" .1f)
  rows+=("| $th | $(calc "$c" .1f) | $(calc "$p" .1f) | $(calc "$p/$c" .3f) | $gflops | $(calc "100*$gf/($c/1e3)/1e9/$peak" .0f)% (peak $(calc "$peak" .1f) GFLOP/s at n=$peak_n) |")
done

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cores=$(nproc)
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
blas=$(readlink -f "$(field "$tmp/peak${threads_list%% *}.json" blas)")
torch_pkg=$(dpkg-query -W -f='${Package} ${Version}' 'libtorch1.13' 2>/dev/null || echo "libtorch $torch_version")
mkdir -p bench/results
{
  echo "# reference_vs_pytorch"
  echo
  echo "One training step (forward, backward, clip 1.0, Adam) of GPT L=4, H=4, C=256, T=128, B=8, V=256:"
  echo "the reference trainer (bench/bench_step) against the same ops in PyTorch (bench/gpt_pytorch.py),"
  echo "run alternately $rounds times each; median over rounds of the median of $steps steps after $warmup warm-up."
  echo "Ratio = pytorch ms / ouroboros ms (>= 1 means the reference trainer is faster)."
  echo "GFLOP/s counts matmul FLOPs: 3 x forward, forward = 2*B*T*(12*L*C*C + C*V) + 4*L*B*T*T*C = $(calc "$gf/3e9" .2f) GFLOP."
  echo "Matmul peak: best of n x n float matmuls, n in 256/512/1024, at the same thread count."
  echo
  echo "Machine: $cpu, $cores cores; $torch_pkg (torch.__version__ $torch_version); BLAS $blas; $(date -u '+%Y-%m-%d %H:%M UTC'); load average before the run: $load_before"
  echo
  echo "| threads | ouroboros ms/step | pytorch ms/step | ratio | ouroboros GFLOP/s | % of matmul peak |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Control: PyTorch run with the glibc malloc settings that make_method applies to the trainer"
  echo "(MALLOC_MMAP_MAX_=0: no block mapped on its own; MALLOC_TRIM_THRESHOLD_=1 TiB), same rounds:"
  echo
  echo "| threads | ouroboros ms/step | pytorch (same malloc) ms/step | ratio |"
  echo "|---|---|---|---|"
  printf '%s\n' "${control[@]}"
} | tee "$out"
