#!/usr/bin/env bash
# Configures and builds ouroboros in Release mode into build/ (override with BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release > "$build_dir/configure.log" 2>&1 || {
  cat "$build_dir/configure.log"; exit 1; }
grep "ouroboros:" "$build_dir/configure.log" || true
cmake --build "$build_dir" -j "$(nproc)"
