#!/usr/bin/env bash
# Runs each libFuzzer target (config, corpus/tokenizer, checkpoint readers) for SECONDS (default
# 60) over its seed corpus in tests/fuzz/corpus/, with ASan and UBSan, from the build that
# `scripts/sanitize.sh asan` makes (built here if missing). New inputs go to a scratch copy of
# the corpus; a crash leaves its input in fuzz-findings/ and fails the run: keep it in
# tests/fuzz/regressions/ with a test that loads it (tests/tools/reliability_test.cpp) and fix
# it, so it stays found. The regressions also seed the runs. A longer run: scripts/fuzz.sh 3600.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
dir="${BUILD_DIR:-build-asan}"
if [[ ! -x "$dir/tests/fuzz/config_fuzz" ]]; then
  scripts/sanitize.sh asan -R '^$' >/dev/null  # build only
fi
cmake --build "$dir" -j "$(nproc)" --target config_fuzz text_fuzz checkpoint_fuzz ouroboros >/dev/null
# A corrupt size field may ask for a huge record: that must fail as std::bad_alloc (caught and
# reported as a corrupt checkpoint), as it does without the sanitizer, not abort the run.
export ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz-findings "$scratch/checkpoint"
# The checkpoint corpus starts from real checkpoints of a one-step run of each tokenizer.
printf 'the cat sat on the mat.\na dog ran to the park.\n%.0s' {1..40} >"$scratch/corpus.txt"
for tok in byte char word; do
  "$dir/ouroboros" train --data "$scratch/corpus.txt" --format text --tokenizer "$tok" --steps 1 \
    --n-layer 1 --n-embd 8 --n-head 2 --block-size 8 --batch-size 2 --eval-interval 0 \
    --out-dir "$scratch/run_$tok" >/dev/null
  cp "$scratch/run_$tok/ckpt.pt" "$scratch/checkpoint/$tok.pt"
done
status=0
for target in config text checkpoint; do
  mkdir -p "$scratch/$target"
  if [[ -d tests/fuzz/corpus/$target ]]; then cp tests/fuzz/corpus/$target/* "$scratch/$target/"; fi
  for f in tests/fuzz/regressions/"$target"_*; do [[ -e $f ]] && cp "$f" "$scratch/$target/"; done
  echo "fuzz: $target for ${seconds} s"
  if ! "$dir/tests/fuzz/${target}_fuzz" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -malloc_limit_mb=200000 \
      -artifact_prefix=fuzz-findings/"$target"- -print_final_stats=1 "$scratch/$target" \
      >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$scratch/$target.log" | tail -2
  fi
done
exit $status
