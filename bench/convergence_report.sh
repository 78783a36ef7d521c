#!/usr/bin/env bash
# Experiment "convergence_report": every training method trains the same model on the fortunes
# corpus (byte level) for the same number of tokens, evaluating on the same validation windows
# every EVAL_INTERVAL steps. Plots validation loss against training tokens and against training
# wall-clock time (evaluation excluded), and tabulates the final bpc per method.
# Writes bench/results/convergence_report.md, convergence_tokens.png, convergence_time.png and
# convergence_report.json (all under OUT).
# Env: BUILD_DIR (build), STEPS (400), LR (3e-4), WARMUP (200 linear warm-up steps, the same for
#      every method), EVAL_INTERVAL (50), EVAL_BATCHES (32),
#      RUNS ("sequential:1 sequential:2 ouroboros gpipe data-parallel"; sequential:N = N intra-op
#      threads), MODEL (flags of the model; default the engine benchmark model), OUT
#      (bench/results), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-python3}"
steps="${STEPS:-400}"
lr="${LR:-3e-4}"
warmup="${WARMUP:-200}"
eval_interval="${EVAL_INTERVAL:-50}"
eval_batches="${EVAL_BATCHES:-32}"
runs="${RUNS:-sequential:1 sequential:2 ouroboros gpipe data-parallel}"
out="${OUT:-bench/results}"
read -r -a model <<<"${MODEL:---n-layer 6 --n-head 4 --n-embd 256 --block-size 128 --batch-size 8}"
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (hint: apt-get install gnuplot-nox)" >&2; exit 1; }
cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
bin="$build_dir/ouroboros"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

common=("${model[@]}" --format fortunes --tokenizer byte --steps "$steps" --lr "$lr"
        --warmup-steps "$warmup" --eval-interval "$eval_interval" --eval-batches "$eval_batches"
        --log-interval 10 --seed 1337)
names=()
for run in $runs; do
  case "$run" in
    sequential:*) flags=(--mode sequential --modules 1 --threads "${run#sequential:}") ;;
    ouroboros) flags=(--mode ouroboros --modules 3 --threads 1) ;;
    gpipe) flags=(--mode gpipe --modules 3 --micro-batches 4 --threads 1) ;;
    data-parallel) flags=(--mode data-parallel --modules 1 --workers 2 --threads 1) ;;
    *) echo "error: unknown run '$run' (hint: sequential:N, ouroboros, gpipe, data-parallel)" >&2; exit 1 ;;
  esac
  name="${run/:/_}"
  names+=("$name")
  echo "== $run: ${flags[*]}, $steps steps" >&2
  "$bin" train "${common[@]}" "${flags[@]}" --out-dir "$tmp/$name" >"$tmp/$name.log"
  grep -E "^(step|eval)" "$tmp/$name.log" >&2
done

"$python" - "$tmp" "$out" "${names[@]}" <<'PY'
import json, math, os, subprocess, sys, datetime
sys.path.insert(0, "bench")
from metrics_clock import training_clock
tmp, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
labels = {"sequential_1": "sequential, 1 thread", "sequential_2": "sequential, 2 threads",
          "ouroboros": "Ouroboros K=3", "gpipe": "GPipe K=3 M=4", "data-parallel": "data-parallel W=2"}
label = lambda n: labels.get(n, n.replace("_", " x"))
result = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "runs": {}}
for n in names:
    cfg = next(json.loads(l[7:]) for l in open(f"{tmp}/{n}.log") if l.startswith("config "))
    per_step = cfg["train"]["batch_size"] * cfg["model"]["block_size"]
    rows = [json.loads(l) for l in open(f"{tmp}/{n}/metrics.jsonl")]
    clock, t = training_clock(rows, per_step)
    evals = [r for r in rows if r.get("split") == "valid"]
    points = [{"step": r["step"], "tokens": r["step"] * per_step, "train_s": clock.get(r["step"]),
               "loss": r["loss"], "full_split": r["step"] == cfg["train"]["steps"]} for r in evals]
    result["runs"][n] = {"label": label(n), "config": cfg, "points": points}
    with open(f"{tmp}/{n}.dat", "w") as f:
        for p in points:
            if not p["full_split"] and p["train_s"] is not None:
                f.write(f'{p["tokens"]} {p["train_s"]:.3f} {p["loss"]:.5f}\n')
first = result["runs"][names[0]]["config"]
m, tr = first["model"], first["train"]
desc = (f'GPT L={m["n_layer"]} H={m["n_head"]} C={m["n_embd"]} T={m["block_size"]} '
        f'B={tr["batch_size"]}, byte-level fortunes, {tr["optimizer"]} lr {tr["lr"]}, '
        f'{tr["warmup_steps"]} warm-up steps')
def plot(png, col, xlabel):
    script = f"""set terminal pngcairo size 960,600
set output '{png}'
set title '{desc}' noenhanced
set xlabel '{xlabel}'
set ylabel 'validation loss (nats)'
set grid
set key top right noenhanced
plot """ + ", ".join(f"'{tmp}/{n}.dat' using {col}:3 with linespoints title '{label(n)}'" for n in names) + "\n"
    open(f"{tmp}/plot.gp", "w").write(script)
    r = subprocess.run(["gnuplot", f"{tmp}/plot.gp"], capture_output=True, text=True)
    if r.returncode != 0:
        open(f"{tmp}/plot.gp", "w").write(script.replace("pngcairo", "png"))
        subprocess.run(["gnuplot", f"{tmp}/plot.gp"], check=True)
plot(f"{out}/convergence_tokens.png", 1, "training tokens")
plot(f"{out}/convergence_time.png", 2, "training wall-clock time (s), evaluation excluded")

cpu = open("/proc/cpuinfo").read()
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
lines = ["# convergence report\n", f"{desc}; {tr['steps']} steps = {tr['steps']*tr['batch_size']*m['block_size']} "
         f"training tokens per method; validation loss on {first['train']['eval_batches']} batches every "
         f"{first['train']['eval_interval']} steps, the full valid split at the end.\n",
         f"Machine: {cpu}, {os.cpu_count()} cores; {result['date']}\n",
         "| method | final valid loss (nats) | bpc | vs first method | training time s | tokens/s |",
         "|---|---|---|---|---|---|"]
base = result["runs"][names[0]]["points"][-1]["loss"]
for n in names:
    p = result["runs"][n]["points"][-1]
    tps = p["tokens"] / p["train_s"] if p["train_s"] else float("nan")
    p_bpc = p["loss"] / math.log(2)
    result["runs"][n]["final"] = {"loss": p["loss"], "bpc": p_bpc, "train_s": p["train_s"], "tokens_per_s": tps}
    lines.append(f"| {label(n)} | {p['loss']:.4f} | {p_bpc:.4f} | {100*(p['loss']/base-1):+.2f}% | "
                 f"{p['train_s']:.1f} | {tps:.0f} |")
# Equal time: the latest training time at which every method has a periodic evaluation at or
# after it (the periodic windows, not the full split); each curve is interpolated linearly in time.
periodic = {n: [p for p in r["points"] if not p["full_split"] and p["train_s"] is not None]
            for n, r in result["runs"].items()}
t_eq = min(ps[-1]["train_s"] for ps in periodic.values())
def at_time(ps, t):
    prev = {"step": 0, "train_s": 0.0, "loss": None}
    for p in ps:
        if p["train_s"] >= t - 1e-9:
            if prev["loss"] is None or p["train_s"] - prev["train_s"] < 1e-9:
                return p["step"], p["loss"]
            f = (t - prev["train_s"]) / (p["train_s"] - prev["train_s"])
            return prev["step"] + f * (p["step"] - prev["step"]), prev["loss"] + f * (p["loss"] - prev["loss"])
        prev = p
    return ps[-1]["step"], ps[-1]["loss"]
lines.append(f"\nEqual training time ({t_eq:.1f} s, the earliest of the methods' last periodic evaluations): "
             "validation loss on the periodic windows, interpolated linearly in time between evaluations:\n")
lines.append("| method | step reached | valid loss | bpc |")
lines.append("|---|---|---|---|")
for n in names:
    step, loss = at_time(periodic[n], t_eq)
    result["runs"][n]["equal_time"] = {"train_s": t_eq, "step": step, "loss": loss}
    lines.append(f"| {label(n)} | {step:.0f} | {loss:.4f} | {loss/math.log(2):.4f} |")
lines.append("\nPlots: convergence_tokens.png (loss against tokens), convergence_time.png (against time).")
open(f"{out}/convergence_report.md", "w").write("\n".join(lines) + "\n")
json.dump(result, open(f"{out}/convergence_report.json", "w"), indent=1)
print("\n".join(lines))
PY
