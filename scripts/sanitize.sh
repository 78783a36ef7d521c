#!/usr/bin/env bash
# Builds ouroboros with clang and sanitizers and runs a part of the suite under them.
#   scripts/sanitize.sh asan   ASan + UBSan (and libFuzzer coverage, for scripts/fuzz.sh) into
#                              build-asan/, then the unit and equivalence tests
#   scripts/sanitize.sh tsan   TSan into build-tsan/, then the threaded engines' tests
# Extra arguments go to ctest. libtorch itself is not instrumented; leaks are not reported (its
# allocator keeps caches for the life of the process).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
kind="${1:-asan}"
shift || true
case "$kind" in
  asan)
    dir="${BUILD_DIR:-build-asan}"
    flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    extra=(-DOUROBOROS_FUZZ=ON)
    tests=(-L "unit|equivalence")
    export ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0:abort_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" ;;
  tsan)
    dir="${BUILD_DIR:-build-tsan}"
    flags="-fsanitize=thread -fno-omit-frame-pointer"
    extra=()
    tests=(-R "Engine|XLEngine|Baselines|PipelineClock")
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan [ctest args]" >&2; exit 2 ;;
esac
mkdir -p "$dir"
CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  "${extra[@]}" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
targets=()
if [[ $kind == asan ]]; then
  # Only what this stage runs: the CLI, the fuzz targets and the test programs labelled unit or
  # equivalence (a file's first line; none means unit). The distributed tests and the bench
  # programs are left unbuilt, which saves minutes of an instrumented build.
  targets=(--target ouroboros config_fuzz text_fuzz checkpoint_fuzz)
  while IFS= read -r src; do
    label=unit
    [[ $(head -1 "$src") =~ label:\ ([a-z\ ]+) ]] && label=${BASH_REMATCH[1]}
    [[ " $label " =~ \ (unit|equivalence)\  ]] && targets+=("$(basename "$src" .cpp)")
  done < <(find tests -name '*_test.cpp' | sort)
fi
cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
cd "$dir"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "${tests[@]}" "$@"
