#!/usr/bin/env bash
# Experiment "demo_check": the README demo against plain backprop with the same settings. Trains
# scripts/demo.sh's run (Ouroboros K = 3 on 2 worker threads) and the same run with --modules 1
# (plain backprop, 1 thread), then reports for each: test bits per character, training seconds,
# and the share of the words (runs of two or more letters) of the demo's 300-character sample
# (OUT_DIR/sample.txt) that occur in the training split (the first 90% of the corpus).
# Writes OUT/demo_check.md and demo_check.json. Finished runs are kept in WORK and not run again.
# Env: OUT (bench/results), WORK (build/demo_check), PYTHON (python3), FLAGS (flags for both runs
# on top of the demo's, e.g. "--steps 3000").
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${OUT:-bench/results}"
work="${WORK:-build/demo_check}"
mkdir -p "$out" "$work"
for arm in ouroboros plain; do
  read -r -a flags <<< "${FLAGS:-}"
  flags+=(--out-dir "$work/$arm")
  [[ $arm == plain ]] && flags+=(--modules 1)
  if [[ ! -f $work/$arm/ckpt.pt ]]; then
    echo "== $arm: scripts/demo.sh ${flags[*]}" >&2
    scripts/demo.sh "${flags[@]}" > "$work/$arm.log" 2>&1
  fi
  build/ouroboros eval --checkpoint "$work/$arm/ckpt.pt" --split test --json > "$work/$arm.eval.json"
done

FLAGS="${FLAGS:-}" "$python" - "$work" "$out" <<'PY'
import datetime, json, os, re, sys
sys.path.insert(0, "bench")
from metrics_clock import training_clock
work, out = sys.argv[1:3]
corpus_dir = os.environ.get("OUROBOROS_FORTUNES_DIR", "/usr/share/games/fortunes")
names = sorted(n for n in os.listdir(corpus_dir)
               if os.path.isfile(os.path.join(corpus_dir, n)) and not n.endswith((".dat", ".u8")))
text = b"".join(open(os.path.join(corpus_dir, n), "rb").read() for n in names)
train = text[: len(text) * 9 // 10].decode("utf-8", "replace")
vocabulary = set(w.lower() for w in re.findall(r"[A-Za-z]{2,}", train))
result = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "arms": {}}
for arm in ("ouroboros", "plain"):
    ev = json.load(open(f"{work}/{arm}.eval.json"))
    sample = open(f"{work}/{arm}/sample.txt").read()  # what scripts/demo.sh sampled
    words = re.findall(r"[A-Za-z]{2,}", sample)
    known = [w for w in words if w.lower() in vocabulary]
    rows = [json.loads(l) for l in open(f"{work}/{arm}/metrics.jsonl")]
    cfg = next(json.loads(l[7:]) for l in open(f"{work}/{arm}.log") if l.startswith("config "))
    _, train_s = training_clock(rows, cfg["train"]["batch_size"] * cfg["model"]["block_size"])
    result["arms"][arm] = {"test_bpc": ev.get("bpc"), "test_loss": ev.get("loss"),
                           "train_s": train_s, "words": len(words), "known_words": len(known),
                           "known_share": len(known) / len(words) if words else 0.0,
                           "sample": sample}
o, p = result["arms"]["ouroboros"], result["arms"]["plain"]
result["bpc_gap"] = o["test_bpc"] / p["test_bpc"] - 1
json.dump(result, open(f"{out}/demo_check.json", "w"), indent=1)
fmt = lambda v, f: "-" if v is None else format(v, f)
lines = ["# demo_check\n",
         "scripts/demo.sh's settings (GPT L=6, C=128, char level, batch 8 x 128, 3000 steps, Muon "
         "8e-3 for the blocks' matrices, AdamW 6e-4 for the rest)" +
         (f" with `{os.environ['FLAGS']}`" if os.environ.get("FLAGS") else "") +
         " for Ouroboros K = 3 (the demo: its default plan) and plain backprop (--modules 1). Machine: "
         f"{os.cpu_count()} cores; {result['date']}.\n",
         "Targets: test bpc within 2% of plain backprop's; 60% of the sample's words in the training text.\n",
         "| run | test bpc | vs plain backprop | training s | words in the training text |",
         "|---|---|---|---|---|"]
for arm, r in result["arms"].items():
    gap = "-" if arm == "plain" else f"{result['bpc_gap'] * 100:+.1f}%"
    lines.append(f"| {arm} | {fmt(r['test_bpc'], '.3f')} | {gap} | {fmt(r['train_s'], '.0f')} | "
                 f"{r['known_words']} of {r['words']} ({r['known_share'] * 100:.0f}%) |")
for arm, r in result["arms"].items():
    lines += ["", f"Sample ({arm}):", "", "```", r["sample"].strip(), "```"]
open(f"{out}/demo_check.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
