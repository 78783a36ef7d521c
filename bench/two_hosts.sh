#!/usr/bin/env bash
# Experiment "two_hosts": Ouroboros against data parallelism and GPipe across a network link. Two hosts are
# network namespaces joined by a veth pair (scripts/two-hosts.sh), the link shaped with tc to each
# of RATES in turn; each host runs one rank with 1 intra-op thread (`ouroboros launch --nnodes 2`).
#   - Ouroboros K = 3 on 2 workers (modules 1 and 3 on host a, module 2 on host b), batch B;
#   - GPipe K = 3 with 4 micro-batches on the same placement, batch B;
#   - data parallelism, --modules 1 --replicas 2 (one replica per host), batch B/2 each: the same
#     rows per step.
# Two models: the engine benchmark model (GPT L=6, H=4, C=256, T=128, B=8; 4.8M weights) trained
# STEPS steps on the fortunes corpus (byte level), for step time and time to a target loss; and
# a wide one (L=12, H=8, C=512, T=64, B=4; 38M weights) whose gradient is 145x the activations Ouroboros sends,
# STEPS_WIDE steps for step time only. Beside each measured step time: the prediction of the cost
# model (`ouroboros plan --link-gbps`): the unshaped step time plus the link seconds it adds.
# Writes bench/results/two_hosts.md and two_hosts.json. Needs root (network namespaces).
# Env: BUILD_DIR (build), RATES ("none 1gbit 100mbit"), STEPS (200), STEPS_WIDE (5),
#      EVAL_INTERVAL (50), PYTHON (python3), OUT (bench/results), NAME (oubench).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-python3}"
rates="${RATES:-none 1gbit 100mbit}"
steps="${STEPS:-200}"
steps_wide="${STEPS_WIDE:-5}"
eval_interval="${EVAL_INTERVAL:-50}"
out="${OUT:-bench/results}"
name="${NAME:-oubench}"
[[ "$(id -u)" == 0 ]] || { echo "error: two_hosts needs root for network namespaces" >&2; exit 1; }
cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
bin="$(realpath "$build_dir/ouroboros")"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'scripts/two-hosts.sh down "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
scripts/two-hosts.sh up "$name"

bench_model=(--n-layer 6 --n-head 4 --n-embd 256 --block-size 128)
wide_model=(--n-layer 12 --n-head 8 --n-embd 512 --block-size 64)
common=(--tokenizer byte --threads 1 --optimizer adam --lr 3e-4 --seed 1337 --warmup-steps 100
        --eval-batches 16 --checkpoint-interval 0)
# The wide model measures step time only: a small generated corpus keeps its final evaluation short.
"$python" -c "
import random; random.seed(1)
w = 'the of and to in is was for on that with as by at from ring module delay gradient'.split()
print(' '.join(random.choice(w) for _ in range(8000)))" >"$tmp/small.txt"

# run NAME STEPS EVAL_INTERVAL MODEL... -- METHOD FLAGS...: one rank on each host.
run() {
  local label="$1" n="$2" every="$3"
  shift 3
  local flags=("$@")
  for node in 0 1; do
    ip netns exec "$name-$([[ $node == 0 ]] && echo a || echo b)" "$bin" launch --nnodes 2 \
      --node-rank "$node" --nproc 1 --master-addr 10.231.0.1 --master-port 29500 -- train \
      "${common[@]}" "${flags[@]}" --steps "$n" --eval-interval "$every" \
      --out-dir "$tmp/$label" >"$tmp/$label.$node.log" 2>&1 &
  done
  wait
  grep -E "^eval valid" "$tmp/$label.0.log" | tail -1 >&2 || true
}

for rate in $rates; do
  if [[ "$rate" == none ]]; then
    for h in a b; do ip netns exec "$name-$h" tc qdisc del dev host0 root 2>/dev/null || true; done
  else
    scripts/two-hosts.sh shape "$name" "$rate"
  fi
  for model in bench wide; do
    if [[ "$model" == bench ]]; then
      m=("${bench_model[@]}" --format fortunes --log-interval 5); b=8; n="$steps"; every="$eval_interval"
    else
      m=("${wide_model[@]}" --format text --data "$tmp/small.txt" --log-interval 1); b=4
      n="$steps_wide"; every=0
    fi
    echo "== $rate, $model model: ouroboros" >&2
    run "$rate.$model.ouroboros" "$n" "$every" "${m[@]}" --modules 3 --batch-size "$b"
    echo "== $rate, $model model: gpipe" >&2
    run "$rate.$model.gpipe" "$n" "$every" "${m[@]}" --mode gpipe --modules 3 --micro-batches 4 \
      --batch-size "$b"
    echo "== $rate, $model model: data parallelism" >&2
    run "$rate.$model.dp" "$n" "$every" "${m[@]}" --modules 1 --replicas 2 --batch-size $((b / 2))
  done
done
# The cost model's link seconds at 1 Gbit/s (bytes / bandwidth: they scale as 1 / rate).
"$bin" plan "${bench_model[@]}" --modules 3 --batch-size 8 --ticks 0 --link-gbps 1 >"$tmp/plan.bench.txt"
"$bin" plan "${wide_model[@]}" --modules 3 --batch-size 4 --ticks 0 --link-gbps 1 >"$tmp/plan.wide.txt"

"$python" - "$tmp" "$out" "$rates" "$steps" "$steps_wide" <<'PY'
import json, math, os, re, statistics, sys, datetime
sys.path.insert(0, "bench")
from metrics_clock import training_clock
tmp, out, rates, steps, steps_wide = sys.argv[1], sys.argv[2], sys.argv[3].split(), int(sys.argv[4]), int(sys.argv[5])
def to_gbps(r):
    m = re.fullmatch(r"([0-9.]+)(k|m|g)bit", r)
    return float(m.group(1)) * {"k": 1e-6, "m": 1e-3, "g": 1.0}[m.group(2)]
def read(label):
    cfg = next(json.loads(l[7:]) for l in open(f"{tmp}/{label}.0.log") if l.startswith("config "))
    rows = [json.loads(l) for l in open(f"{tmp}/{label}/metrics.jsonl")]
    per_step = cfg["train"]["batch_size"] * cfg["dist"]["replicas"] * cfg["model"]["block_size"]
    speeds = [r for r in rows if "tokens_per_s" in r]
    step_s = statistics.median(per_step / r["tokens_per_s"] for r in speeds[1:])  # after the fill
    clock, t = training_clock(rows, per_step)
    evals = [(r["step"], clock.get(r["step"]), r["loss"]) for r in rows if r.get("split") == "valid"]
    final = evals.pop()  # the last is the final evaluation, on the whole valid split
    return {"step_s": step_s, "evals": evals, "final_loss": final[2], "train_s": t}
def link_s(model, method, g):
    # The plan's "+X s per step" line of the method at 1 Gbit/s, scaled to g Gbit/s.
    text = open(f"{tmp}/plan.{model}.txt").read()
    key = {"ouroboros": "ouroboros K", "gpipe": "gpipe K", "dp": "data parallelism on"}[method]
    line = next(l for l in text.splitlines() if l.strip().startswith(key))
    return float(re.search(r"\+([0-9.]+) s per step", line).group(1)) / g
res = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "rates": {}}
for rate in rates:
    for model in ("bench", "wide"):
        for method in ("ouroboros", "gpipe", "dp"):
            res["rates"].setdefault(rate, {}).setdefault(model, {})[method] = read(f"{rate}.{model}.{method}")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
L = ["# two_hosts\n",
     "Two hosts = two network namespaces joined by a veth pair, shaped with tc (tbf: rate only; this "
     "kernel has no netem, so no latency is added); one rank per host, 1 intra-op thread each "
     "(`ouroboros launch --nnodes 2`). Ouroboros K = 3 on 2 workers, batch B; GPipe K = 3 with 4 "
     "micro-batches on the same placement, batch B; data parallelism (DDP) on 2 replicas of batch "
     "B/2: the same rows per step. Adam lr 3e-4, 100 warm-up steps, "
     "fortunes, byte level.\n",
     f"Machine: {cpu}, {os.cpu_count()} cores (one per host); {res['date']}\n",
     "Step time: median seconds per step over the progress lines after the first. Predicted: the "
     "unshaped step time of the same method plus the link seconds of the cost model "
     "(`ouroboros plan --link-gbps G`: bytes / bandwidth, no overlap with compute).\n"]
for model, desc, n in (("bench", "benchmark model, GPT L=6 H=4 C=256 T=128 B=8, 4.8M weights", steps),
                       ("wide", "wide model, GPT L=12 H=8 C=512 T=64 B=4, 38M weights", steps_wide)):
    L += [f"\n## {desc} ({n} steps)\n", "| link | method | step s | predicted s | vs DP |", "|---|---|---|---|---|"]
    for rate in rates:
        r = res["rates"][rate][model]
        for method, label in (("ouroboros", "Ouroboros K=3"), ("gpipe", "GPipe K=3 M=4"),
                              ("dp", "data parallelism R=2")):
            base = res["rates"][rates[0]][model][method]["step_s"]
            if rate == "none":
                pred = "-"
            else:
                p = base + link_s(model, method, to_gbps(rate))
                r[method]["predicted_s"] = p
                pred = f"{p:.3f}"
            L.append(f"| {rate if rate != 'none' else 'unshaped veth'} | {label} | {r[method]['step_s']:.3f} | {pred} | "
                     f"{r[method]['step_s'] / r['dp']['step_s']:.2f}x |")
# Time to a target loss (bench model): the higher of the two methods' last periodic valid losses,
# so both reach it; the training time at which each first reaches it, interpolated linearly.
L += ["\n## Time to a target loss (benchmark model)\n",
      "Target: the highest of the methods' last periodic validation losses (16 batches), so all "
      "reach it; the time of each is interpolated linearly between its periodic evaluations. "
      "The losses per step do not depend on the link (every run is deterministic); the time does.\n",
      "| link | target loss | Ouroboros s | GPipe s | data parallelism s | Ouroboros / DP | Ouroboros / GPipe |",
      "|---|---|---|---|---|---|---|"]
def time_to(evals, target):
    prev = (0, 0.0, None)
    for step, t, loss in evals:
        if t is None: continue
        if loss <= target:
            if prev[2] is None: return t
            f = (prev[2] - target) / (prev[2] - loss)
            return prev[1] + f * (t - prev[1])
        prev = (step, t, loss)
    return float("nan")
for rate in rates:
    r = res["rates"][rate]["bench"]
    target = max(r[m]["evals"][-1][2] for m in ("ouroboros", "gpipe", "dp"))
    to, tg, td = (time_to(r[m]["evals"], target) for m in ("ouroboros", "gpipe", "dp"))
    r["target"] = {"loss": target, "ouroboros_s": to, "gpipe_s": tg, "dp_s": td}
    L.append(f"| {rate if rate != 'none' else 'unshaped veth'} | {target:.4f} | {to:.1f} | {tg:.1f} | "
             f"{td:.1f} | {to / td:.2f}x | {to / tg:.2f}x |")
finals = res["rates"][rates[0]]["bench"]
L.append(f"\nFinal validation loss after {steps} steps, whole valid split: Ouroboros "
         f"{finals['ouroboros']['final_loss']:.4f}, GPipe {finals['gpipe']['final_loss']:.4f}, "
         f"data parallelism {finals['dp']['final_loss']:.4f}.")
open(f"{out}/two_hosts.md", "w").write("\n".join(L) + "\n")
json.dump(res, open(f"{out}/two_hosts.json", "w"), indent=1)
print("\n".join(L))
PY
