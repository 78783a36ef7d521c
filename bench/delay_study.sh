#!/usr/bin/env bash
# Experiment "delay_study": which delay-tolerant setting lets Ouroboros reach plain backprop's
# loss, and how soon (docs/DELAY.md). Every arm trains the engine benchmark model (GPT L=6,
# C=256, T=128, B=8, byte level, fortunes) for the same tokens from the same seed and data order.
#   1. Training: each arm of ARMS; plain-backprop arms run on 1 core, Ouroboros arms (K = 3) on 2
#      worker threads; arms are packed onto the machine's cores, so their losses (deterministic
#      at 1 intra-op thread per worker) do not depend on what ran beside them. Finished arms are
#      kept in WORK and not run again.
#      Per-module update statistics every 20 steps go to each arm's metrics.jsonl.
#   2. Timing, alone on the machine: seconds per step of sequential (1 thread), each Ouroboros
#      arm's settings, GPipe K=3 M=4 and data parallelism W=2 (1 thread per worker each).
#   3. Report: final loss of each arm against the best plain-backprop arm and against its own
#      optimizer without delay, steps and time to reach TARGET's final loss (GPipe and data
#      parallelism compute exact gradients, so they need TARGET's steps at their own step time),
#      and PNGs of validation loss against tokens and against time.
# Writes OUT/delay_study.md, delay_study.json, delay_study_tokens.png, delay_study_time.png.
# Env: BUILD_DIR (build), STEPS (1000), LR (3e-4), WARMUP (200), SEED (1337), OUT (bench/results),
#      WORK (build/delay_study), ARMS (name=flags;...; see the default below; names start with
#      sync or ouro), TARGET (arm whose final loss is the target; default the best sync arm),
#      TIMING_STEPS (40), PYTHON (python3),
#      BINARY (the CLI to run; default: build and run BUILD_DIR's),
#      PHASE (train = stop after the training runs, e.g. to time later on an idle machine),
#      PLOT_ARMS (comma-separated arms to plot; default the six below),
#      EXTRA (flags for every run, the timing baselines too, e.g. "--model transformer-xl
#      --mem-len 128" for the small Transformer-XL),
#      MODEL (the model and data flags in place of the benchmark model's, e.g. the demo's shape
#      on the held-out corpus: "--n-layer 6 --n-head 4 --n-embd 128 --block-size 128
#      --batch-size 8 --format text --data $(bench/heldout_corpus.sh) --tokenizer char").
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-python3}"
steps="${STEPS:-1000}"
lr="${LR:-3e-4}"
warmup="${WARMUP:-200}"
seed="${SEED:-1337}"
out="${OUT:-bench/results}"
work="${WORK:-$build_dir/delay_study}"
target="${TARGET:-}"
timing_steps="${TIMING_STEPS:-40}"
qh="--optimizer qhadam --beta1 0.99 --qh-nu 0.9 --beta2 0.99"
nadam="--optimizer nadam --beta1 0.99 --beta2 0.99"
# The first arms predict at horizon 1 x delay (--predict-scale 1, the default before this study's
# second part); the second part measures the horizon and the partition.
p1="--weight-predict optimizer --predict-scale 1"
default_arms="sync_adam_b2_999=--modules 1 --beta2 0.999;sync_adam=--modules 1 --beta2 0.99"
default_arms+=";sync_qhadam=--modules 1 $qh;sync_nadam=--modules 1 $nadam"
default_arms+=";ouro_adam=--modules 3 --beta2 0.99 --weight-predict none"
default_arms+=";ouro_adam_predict=--modules 3 --beta2 0.99 $p1"
default_arms+=";ouro_qhadam_predict=--modules 3 $qh $p1"
default_arms+=";ouro_nadam_predict=--modules 3 $nadam $p1"
default_arms+=";ouro_adam_b2_999=--modules 3 --beta2 0.999 --weight-predict none"
default_arms+=";ouro_adam_predict_b2_999=--modules 3 --beta2 0.999 $p1"
default_arms+=";ouro_adam_predict_pipemare_b2_999=--modules 3 --beta2 0.999 $p1 --stale-lr pipemare"
qh999="--optimizer qhadam --beta1 0.99 --qh-nu 0.9 --beta2 0.999"
default_arms+=";sync_qhadam_b2_999=--modules 1 $qh999"
default_arms+=";ouro_qhadam_predict_b2_999=--modules 3 $qh999 $p1"
default_arms+=";ouro_adam_predict_b2_999_warm=--modules 3 --beta2 0.999 $p1 --sync-warmup 200"
# Part two (Adam 0.9, 0.999, the defaults). The prediction's horizon: 1.5, 2 and 3 x delay.
default_arms+=";ouro_predict_s15=--modules 3 --predict-scale 1.5"
default_arms+=";ouro_predict_s2=--modules 3 --predict-scale 2"
default_arms+=";ouro_predict_s3=--modules 3 --predict-scale 3"
# Fewer blocks at delay 2 (worker 0 holds modules 1 and 3, so moving blocks between them keeps its
# load but lengthens the tick's forward chain): 1 block in module 1, then none (only the
# embedding, as K = 2's plan has it, which is plain backprop but for a delay-1 input embedding).
default_arms+=";ouro_predict_p14=--modules 3 $p1 --partition 1,4"
default_arms+=";ouro_predict_p03=--modules 3 $p1 --partition 0,3"
default_arms+=";ouro_predict_k2=--modules 2 $p1"
# About the wall-clock time plain backprop takes for its 1000 steps: the defaults (scale 1.5), and
# horizon 1 with partition 1,4.
default_arms+=";ouro_default_1800=--modules 3 --steps 1800"
default_arms+=";ouro_predict_p14_1800=--modules 3 $p1 --partition 1,4 --steps 1800"
arms="${ARMS:-$default_arms}"
export PLOT_ARMS="${PLOT_ARMS:-sync_adam_b2_999,ouro_adam_b2_999,ouro_adam_predict_b2_999,ouro_predict_s15,ouro_predict_p03,ouro_default_1800}"
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (hint: apt-get install gnuplot-nox)" >&2; exit 1; }
# BINARY: a copy of the CLI to run instead of building one (keeps a long study on one binary while
# the tree changes).
binary="${BINARY:-$build_dir/ouroboros}"
[ -n "${BINARY:-}" ] || cmake --build "$build_dir" -j2 --target ouroboros >/dev/null
mkdir -p "$out" "$work"

model_flags="${MODEL:---n-layer 6 --n-head 4 --n-embd 256 --block-size 128 --batch-size 8 --format fortunes
--tokenizer byte}"
model="$model_flags --lr $lr --threads 1 --seed $seed ${EXTRA:-}"
schedule="--steps $steps --warmup-steps $warmup --eval-interval 100 --eval-batches 16 --log-interval 10"
"$python" - "$binary" "$work" "$out" "$arms" "$model" "$schedule" "$target" "$timing_steps" <<'PY'
import datetime, json, math, os, shlex, subprocess, sys, time
binary, work, out, arms_text, model, schedule, target, timing_steps = sys.argv[1:9]
model, schedule = shlex.split(model), shlex.split(schedule)
common = model + schedule
arms = []
for item in arms_text.split(";"):
    name, flags = item.split("=", 1)
    flags = shlex.split(flags)
    K = int(flags[flags.index("--modules") + 1]) if "--modules" in flags else 1
    arms.append((name, flags, 1 if K == 1 else K - 1))
cores = os.cpu_count() or 1

def steps_of(flags):
    # An arm may train for its own number of steps (e.g. an equal-time budget).
    f = flags if "--steps" in flags else common
    return int(f[f.index("--steps") + 1])
def common_for(flags):
    if "--steps" not in flags:
        return common
    i = common.index("--steps")
    return common[:i] + common[i + 2:]
def done(name, flags):
    path = f"{work}/{name}/metrics.jsonl"
    if not os.path.exists(path):
        return False
    rows = [json.loads(l) for l in open(path)]
    return any(r.get("split") == "valid" and r["step"] == steps_of(flags) for r in rows)

# 1. Training, packed onto the cores.
pending = [a for a in arms if not done(a[0], a[1])]
running = []
while pending or running:
    used = sum(c for _, _, c in running)
    for a in list(pending):
        if used + a[2] <= cores or not running:
            log = open(f"{work}/{a[0]}.log", "w")
            cmd = [binary, "train", *common_for(a[1]), *a[1], "--diagnostics-interval", "20",
                   "--out-dir", f"{work}/{a[0]}", "--overwrite"]
            print(f"== {a[0]}: {' '.join(a[1])}", file=sys.stderr, flush=True)
            running.append((a[0], subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), a[2]))
            pending.remove(a)
            used += a[2]
    time.sleep(2)
    for r in list(running):
        if r[1].poll() is not None:
            if r[1].returncode != 0:
                sys.exit(f"error: arm {r[0]} failed; see {work}/{r[0]}.log")
            print(f"== {r[0]} finished", file=sys.stderr, flush=True)
            running.remove(r)

if os.environ.get("PHASE") == "train":
    sys.exit(0)

# 2. Timing, one configuration at a time.
def seconds_per_step(flags, tag):
    # Kept in WORK: a rerun reuses it unless TIMING_FRESH=1.
    d = f"{work}/timing_{tag}"
    if os.environ.get("TIMING_FRESH") == "1" or not os.path.exists(f"{d}/metrics.jsonl"):
        run_timing(flags, d)
    rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"tokens_per_s"' in l]
    tps = sorted(r["tokens_per_s"] for r in (rows[2:] or rows))  # past the pipeline fill
    per_step = 8 * 128
    return per_step / tps[len(tps) // 2]
def run_timing(flags, d):
    cmd = [binary, "train", *model, *flags, "--steps", timing_steps, "--warmup-steps", "5",
           "--eval-interval", "0", "--eval-batches", "1", "--log-interval", "5", "--out-dir", d,
           "--overwrite"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def without(flags, key):
    i = flags.index(key)
    return flags[:i] + flags[i + 2:]
timing, sync_ticks, sync_timing = {}, {}, {}
for name, flags, _ in arms:
    if name.startswith("ouro"):
        if "--sync-warmup" in flags:
            # Its first W ticks run synchronously (about sequential speed), the rest delayed.
            sync_ticks[name] = int(flags[flags.index("--sync-warmup") + 1])
            sync_timing[name] = seconds_per_step(flags, name + "_synchronous")
            flags = without(flags, "--sync-warmup")
        if "--steps" in flags:
            flags = without(flags, "--steps")
        timing[name] = seconds_per_step(flags, name)
timing["sequential"] = seconds_per_step(["--modules", "1"], "sequential")
exact_methods = ["sequential"]
if "transformer-xl" not in model:  # GPipe and data parallelism run the GPT model only
    timing["gpipe"] = seconds_per_step(["--mode", "gpipe", "--modules", "3", "--micro-batches", "4"], "gpipe")
    timing["data-parallel"] = seconds_per_step(["--mode", "data-parallel", "--workers", "2"], "dp")
    exact_methods += ["gpipe", "data-parallel"]
def step_time(name):
    return timing[name] if name in timing else timing["sequential"]
def time_at(name, steps):
    w = min(steps, sync_ticks.get(name, 0))
    return w * sync_timing.get(name, 0.0) + (steps - w) * step_time(name)

# 3. Report.
def evals(name):
    rows = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl")]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") == "valid"]
runs = {a[0]: evals(a[0]) for a in arms}
final = {n: e[-1][1] for n, e in runs.items()}
sync = [n for n in runs if n.startswith("sync")]
best_sync = min(sync, key=lambda n: final[n]) if sync else None
target = target or best_sync
goal = final[target]
def steps_to(points, loss):
    # First crossing of `loss` on the periodic evaluations (same windows), interpolated linearly;
    # the final point is on the full split, so it is used only when it is the first below.
    prev = (0, float("inf"))
    for s, l in points:
        if l <= loss:
            if prev[1] == float("inf"):
                return float(s)
            return prev[0] + (s - prev[0]) * (prev[1] - loss) / (prev[1] - l)
        prev = (s, l)
    return None
own = lambda n: "sync" + n[len("ouro"):].replace("_predict", "").replace("_correct", "").replace("_pipemare", "").replace("_warm", "")
rows = []
for name, flags, _ in arms:
    s = steps_to(runs[name], goal)
    t = time_at(name, s) if s is not None else None
    # The other way round: how long the target arm (plain backprop) takes to reach this arm's
    # final loss, against this arm's own training time.
    back = steps_to(runs[target], final[name])
    own_time = time_at(name, steps_of(flags))
    seq_time = time_at(target, back) if back is not None else None
    rows.append({"arm": name, "flags": " ".join(flags), "final_loss": final[name],
                 "target_steps_to_this_loss": back, "target_time_to_this_loss_s": seq_time,
                 "own_time_s": own_time,
                 "vs_best_sync": final[name] / final[best_sync] - 1,
                 "vs_own_sync": final[name] / final[own(name)] - 1 if own(name) in final and name.startswith("ouro") else None,
                 "steps_to_target": s, "s_per_step": step_time(name), "time_to_target_s": t})
seq_steps = steps_to(runs[target], goal)
baselines = {m: seq_steps * timing[m] for m in exact_methods}
cpu = open("/proc/cpuinfo").read()
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
date = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
result = {"date": date, "machine": f"{cpu}, {cores} cores", "common": " ".join(common), "target": target,
          "target_loss": goal, "best_sync": best_sync, "timing_s_per_step": timing,
          "baseline_time_to_target_s": baselines, "arms": rows,
          "curves": {n: runs[n] for n in runs}}
json.dump(result, open(f"{out}/delay_study.json", "w"), indent=1)

lines = ["# delay_study\n",
         f"{'Transformer-XL' if 'transformer-xl' in model else 'GPT'}, "
         f"`{os.environ.get('MODEL', '--n-layer 6 --n-head 4 --n-embd 256 --block-size 128 --batch-size 8 --format fortunes --tokenizer byte')}`"
         f"{' (extra flags: `' + os.environ['EXTRA'] + '`)' if os.environ.get('EXTRA') else ''}; "
         f"{common[common.index('--steps')+1]} steps "
         f"from seed {common[common.index('--seed')+1]}; lr {common[common.index('--lr')+1]}, "
         f"{common[common.index('--warmup-steps')+1]} warm-up steps, cosine. "
         "Validation loss on 128 windows every 100 steps, the full valid split at the end. "
         "Ouroboros: K = 3 modules on 2 worker threads. Every process at 1 intra-op thread per worker.\n",
         f"Machine: {result['machine']}; {date}\n",
         f"Target: the final loss of `{target}`, {goal:.4f} nats. Best plain-backprop arm: `{best_sync}`.\n",
         "| arm | flags | final valid loss | vs best plain backprop | vs own optimizer without delay | steps to target | s/step | time to target s | time vs sequential | time to its own final loss: this arm / target arm |",
         "|---|---|---|---|---|---|---|---|---|---|"]
fmt = lambda v, f: "-" if v is None else format(v, f)
for r in rows:
    ratio = r["time_to_target_s"] / baselines["sequential"] if r["time_to_target_s"] else None
    lines.append(f"| {r['arm']} | `{r['flags']}` | {r['final_loss']:.4f} | {100*r['vs_best_sync']:+.2f}% | "
                 f"{fmt(None if r['vs_own_sync'] is None else 100*r['vs_own_sync'], '+.2f')}{'%' if r['vs_own_sync'] is not None else ''} | "
                 f"{fmt(r['steps_to_target'], '.0f')} | {r['s_per_step']:.3f} | {fmt(r['time_to_target_s'], '.0f')} | "
                 f"{fmt(ratio, '.2f')}{'x' if ratio else ''} | "
                 + (f"{r['own_time_s']:.0f} s / {r['target_time_to_this_loss_s']:.0f} s = "
                    f"{r['own_time_s'] / r['target_time_to_this_loss_s']:.2f}x |"
                    if r["target_time_to_this_loss_s"] else "- |"))
lines.append("")
lines.append(f"Exact-gradient methods need `{target}`'s {seq_steps:.0f} steps: time to target "
             + ", ".join(f"{m} {baselines[m]:.0f} s ({timing[m]:.3f} s/step)" for m in baselines) + ".")
lines.append("Steps to target are read off the periodic evaluations (interpolated); times are those steps "
             "at each method's step time measured alone on the machine after the training runs (s/step: "
             "the delayed ticks; an arm with a synchronous warm-up spends its first ticks at the "
             "synchronous step time).\n")
# Per-module update statistics (every 20 steps): oscillation shows as a negative cosine between
# consecutive updates.
def module_stats(name):
    rows = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if '"module"' in l]
    by = {}
    for r in rows:
        by.setdefault(r["module"], []).append(r)
    return by
windows = [(1, 200), (201, 600), (601, 10**9)]
lines.append("Cosine between consecutive updates, mean per module over steps 1-200 / 201-600 / 601-end "
             "(module 0 = the whole model of plain backprop; module 3 has no delay, 1 the largest):\n")
lines.append("| arm | module | cos 1-200 | cos 201-600 | cos 601-end | update RMS 201-600 |")
lines.append("|---|---|---|---|---|---|")
stats_out = {}
for name, _, _ in arms:
    for k, rs in sorted(module_stats(name).items()):
        cells = []
        for lo, hi in windows:
            c = [r["update_cos"] for r in rs if lo <= r["step"] <= hi and r["update_cos"] is not None]
            cells.append(sum(c) / len(c) if c else None)
        rms = [r["update_rms"] for r in rs if 201 <= r["step"] <= 600]
        rms = sum(rms) / len(rms) if rms else None
        stats_out.setdefault(name, {})[k] = {"cos": cells, "update_rms": rms}
        lines.append(f"| {name} | {k} | " + " | ".join(fmt(c, '+.3f') for c in cells) + f" | {fmt(rms, '.2e')} |")
lines.append("")
result["module_stats"] = stats_out
json.dump(result, open(f"{out}/delay_study.json", "w"), indent=1)
lines.append("![loss against tokens](delay_study_tokens.png)\n")
lines.append("![loss against time](delay_study_time.png)\n")
open(f"{out}/delay_study.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

for n, pts in runs.items():
    with open(f"{work}/{n}.dat", "w") as f:
        for s, l in (pts[:-1] or pts):
            f.write(f"{s*8*128} {time_at(n, s):.2f} {l:.5f}\n")
ymax = 1.25 * max(final.values())  # the early, near-uniform losses would flatten the rest
shown = [n for n in os.environ.get("PLOT_ARMS", "").split(",") if n in runs] or list(runs)
def plot(path, col, xlabel):
    series = ", ".join(f"'{work}/{n}.dat' using {col}:3 with linespoints title '{n}' noenhanced"
                       for n in shown)
    script = (f"set terminal pngcairo size 1000,650\nset output '{path}'\nset xlabel '{xlabel}'\n"
              f"set ylabel 'validation loss (nats)'\nset yrange [*:{ymax:.3f}]\nset key top right\nset grid\n"
              f"set title 'delay study: Ouroboros K=3 against plain backprop'\nplot {series}\n")
    open(f"{work}/plot.gp", "w").write(script)
    r = subprocess.run(["gnuplot", f"{work}/plot.gp"], capture_output=True, text=True)
    if r.returncode != 0:
        open(f"{work}/plot.gp", "w").write(script.replace("pngcairo", "png"))
        subprocess.run(["gnuplot", f"{work}/plot.gp"], check=True)
plot(f"{out}/delay_study_tokens.png", 1, "training tokens")
plot(f"{out}/delay_study_time.png", 2, "training time (s) at the measured step time of each method")
PY
