#!/usr/bin/env bash
# Experiment "convergence": sequential backprop (1 thread) against Ouroboros (K = 3 on 2 worker
# threads, 1 intra-op thread each) training the same model on the fortunes corpus for the same
# number of tokens. Reports the final validation loss of each (equal tokens) and each one's loss at
# the wall-clock time Ouroboros finished (equal time). Writes bench/results/convergence.md.
# Env: BUILD_DIR (default build), STEPS (default 400), LR (default 3e-4), PYTHON (default
# /usr/bin/python3), EXTRA (more train flags for both sides, e.g. "--model transformer-xl
# --mem-len 128"), OUT (default bench/results/convergence.md), WARMUP (learning-rate warm-up steps,
# default 200), BATCH (sequences per step, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"
steps="${STEPS:-400}"
warmup="${WARMUP:-200}"
batch="${BATCH:-8}"
lr="${LR:-3e-4}"
out="${OUT:-bench/results/convergence.md}"
read -r -a extra <<< "${EXTRA:-}"
cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
bin="$build_dir/ouroboros"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

common=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128 --batch-size "$batch" --tokenizer byte
        --steps "$steps" --lr "$lr" --warmup-steps "$warmup" --eval-interval 50 --eval-batches 32
        --log-interval 50 --threads 1 --seed 1337 ${extra[@]+"${extra[@]}"})
echo "sequential backprop, $steps steps" >&2
"$bin" train "${common[@]}" --modules 1 --out-dir "$tmp/seq" | grep -E "^(step|eval)" >&2
echo "Ouroboros K=3, $steps steps" >&2
"$bin" train "${common[@]}" --modules 3 --out-dir "$tmp/ouro" | grep -E "^(plan|module|step|eval)" >&2

"$python" - "$tmp/seq/metrics.jsonl" "$tmp/ouro/metrics.jsonl" "$steps" "$lr" "${EXTRA:-}" "$warmup" "$batch" <<'PY' | tee "$out"
import json, math, subprocess, sys, datetime
def evals(path):
    rows = [json.loads(l) for l in open(path)]
    return [r for r in rows if r.get("split") == "valid"]
seq, ouro, steps, lr = evals(sys.argv[1]), evals(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def at_time(rows, t):
    # The last evaluation finished by wall-clock time t.
    done = [r for r in rows if r["elapsed_s"] <= t + 1e-9]
    return done[-1] if done else None
# Equal time: both sides' periodic evaluations (the same windows), at the time of
# Ouroboros's last periodic evaluation.
seq_p = [r for r in seq if r["step"] < steps]
ouro_p = [r for r in ouro if r["step"] < steps]
t_cmp = ouro_p[-1]["elapsed_s"]
s_at = at_time(seq_p, t_cmp)
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
ratio = ouro[-1]["loss"] / seq[-1]["loss"]
print("# convergence\n")
family = "Transformer-XL" if "transformer-xl" in sys.argv[5] else "GPT"
batch = int(sys.argv[7])
print(f"{family} L=6, H=4, C=256, T=128, B={batch}, byte vocabulary, Adam lr {lr} ({sys.argv[6]} warm-up steps, cosine),")
print(f"{steps} steps = {steps*batch*128} training tokens of the fortunes corpus each; validation loss on")
print(f"{32*batch} windows every 50 steps and the full valid split at the end. Sequential: 1 thread;")
print("Ouroboros: K = 3 modules on 2 worker threads, 1 intra-op thread each.\n")
if len(sys.argv) > 5 and sys.argv[5]:
    print(f"Extra flags on both sides: `{sys.argv[5]}`\n")
print(f"Machine: {model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC\n")
print("| method | final valid loss (nats) | bpc | wall-clock s |")
print("|---|---|---|---|")
for name, rows in (("sequential", seq), ("ouroboros K=3", ouro)):
    r = rows[-1]
    print(f"| {name} | {r['loss']:.4f} | {r['loss']/math.log(2):.4f} | {r['elapsed_s']:.0f} |")
print(f"\nEqual tokens: Ouroboros / sequential validation loss = {ratio:.4f} ({100*(ratio-1):+.2f}%).")
if s_at:
    o = ouro_p[-1]
    print(f"Equal time ({t_cmp:.0f} s): Ouroboros at step {o['step']} has valid loss {o['loss']:.4f}, "
          f"sequential at step {s_at['step']} has {s_at['loss']:.4f} (same {32*batch} windows).")
PY
