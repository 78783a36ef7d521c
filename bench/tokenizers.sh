#!/usr/bin/env bash
# Char-level against BPE on the demo corpus: the demo's model and Ouroboros settings (K = 3 on 2
# worker threads, 1 intra-op thread each), the same steps and batch shape, compared in bits per
# byte (per token losses of different vocabularies do not compare). Writes
# bench/results/tokenizers.md and tokenizers.png (both runs' curves, `ouroboros plot`).
#   STEPS=1000 VOCAB=1000 bench/tokenizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/ouroboros
steps="${STEPS:-1000}"
vocab="${VOCAB:-1000}"
work=build/tokenizers
mkdir -p "$work" bench/results
common=(--modules 3 --n-layer 6 --n-head 4 --n-embd 128 --block-size 128 --batch-size 8
  --steps "$steps" --lr 6e-4 --warmup-steps 200 --eval-interval 250 --eval-batches 20
  --log-interval 100 --overwrite)
declare -A extra=([char]="--tokenizer char" [bpe]="--tokenizer bpe --vocab-size $vocab")
out=bench/results/tokenizers.md
{
  echo "# Char-level vs BPE ($vocab pieces) on fortunes, $steps steps"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; Ouroboros K = 3, GPT 6 x 128, batch 8 x 128 tokens."
  echo
  echo "| tokenizer | valid loss (nats/token) | valid bpb | test bpb | training s |"
  echo "|---|---|---|---|---|"
} > "$out"
for t in char bpe; do
  # shellcheck disable=SC2086
  $bin train "${common[@]}" ${extra[$t]} --out-dir "$work/$t" > "$work/$t.log"
  valid=$(grep "eval valid @ step $steps" "$work/$t.log" | tail -n 1)
  test=$($bin eval --checkpoint "$work/$t/ckpt.pt" --split test --json)
  seconds=$(grep -o '| [0-9.]* s |' "$work/$t.log" | tail -n 1 | tr -d '|s ')
  loss=$(echo "$valid" | sed 's/.*| loss \([0-9.]*\).*/\1/')
  vbpb=$(echo "$valid" | sed 's/.*| bpb \([0-9.]*\).*/\1/')
  tbpb=$(echo "$test" | sed 's/.*"bpb":\([0-9.]*\).*/\1/')
  printf '| %s | %s | %s | %.4f | %s |\n' "$t" "$loss" "$vbpb" "$tbpb" "$seconds" >> "$out"
done
$bin plot "$work/char" "$work/bpe" --out bench/results/tokenizers.png
cat "$out"
