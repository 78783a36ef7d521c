#!/usr/bin/env bash
# Builds ouroboros against libtorch 2.x, the CUDA build of the PyPI wheel pinned below, into
# build-torch2/ (override with BUILD_DIR): every target, Release, CUDA libtorch on. The wheel is
# installed into .venv-torch2 (project-local, git-ignored) only when it is not there; pip's cache
# keeps the download once per machine. Needs the CUDA toolkit at configure time (nvcc on PATH or
# under CUDA_HOME, default /usr/local/cuda): the wheel's CMake config checks it; nothing here
# needs a GPU to build or to run the CPU test suite (scripts/test-torch2.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build-torch2}"
venv=.venv-torch2
pin="torch==2.11.0"

if ! "$venv/bin/python" -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' \
    2>/dev/null; then
  if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  echo "build-torch2: installing $pin into $venv (with its CUDA libraries, about 4.6 GB)"
  "$venv/bin/pip" install --disable-pip-version-check --quiet --timeout 60 --retries 5 "$pin"
fi
torch_root="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"

cuda_home="${CUDA_HOME:-/usr/local/cuda}"
nvcc="$(command -v nvcc || true)"
[ -n "$nvcc" ] || nvcc="$cuda_home/bin/nvcc"
if [ ! -x "$nvcc" ]; then
  echo "build-torch2: no nvcc on PATH or in $cuda_home/bin: the CUDA wheel's CMake config needs the" \
       "CUDA toolkit (set CUDA_HOME)" >&2
  exit 1
fi
cuda_home="$(cd "$(dirname "$nvcc")/.." && pwd)"

mkdir -p "$build_dir"
# The wheel's root leads CMAKE_PREFIX_PATH, so its libraries are found before any libtorch of the
# system's. Its CMake config warns that it ignores CMAKE_CUDA_ARCHITECTURES (it warns whenever the
# variable is defined, and enabling CUDA defines it) and that it finds no kineto library (kineto
# is inside libtorch_cpu): both harmless, ouroboros compiles no CUDA code of its own.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_root" \
  -DCUDAToolkit_ROOT="$cuda_home" -DCMAKE_CUDA_COMPILER="$nvcc" \
  > "$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log"; exit 1; }
grep "ouroboros:" "$build_dir/configure.log" || true
cmake --build "$build_dir" -j "$(nproc)"
