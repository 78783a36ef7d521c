#!/usr/bin/env bash
# Experiment "ci_time": how long CI's .ci/run takes on a clean clone, step by step. Clones the
# committed HEAD into a temporary folder and runs each command of .ci/run there in turn, timing
# each; prints a Markdown table (and writes it to bench/results/ci_time.md). ccache's cache
# (~/.cache/ccache) is used as it is: run with CCACHE_DISABLE=1 to time builds from nothing.
#   bench/ci_time.sh [CLONE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
clone="${1:-$(mktemp -d /tmp/ouroboros-ci.XXXXXX)}"
git clone -q "$root" "$clone"
mapfile -t steps < <(sed -nE 's/^(stage )?(scripts\/.*)/\2/p' "$clone/.ci/run")
table="| step | seconds |\n|---|---|\n"
total=0
for step in "${steps[@]}"; do
  echo "ci_time: $step" >&2
  start=$(date +%s)
  (cd "$clone" && CI=true bash -c "$step") > "$clone/ci_step_$(echo "$step" | tr -c 'a-z0-9' _).log" 2>&1 || {
    echo "ci_time: '$step' failed; its log is in $clone" >&2; exit 1; }
  took=$(( $(date +%s) - start ))
  total=$(( total + took ))
  table+="| \`$step\` | $took |\n"
done
table+="| total | $total |\n"
out="bench/results/ci_time.md"
{
  echo "# .ci/run on a clean clone, $(date -u +%Y-%m-%d) ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo -e "$table"
} > "$root/$out"
cat "$root/$out"
