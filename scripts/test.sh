#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (CTest labels: unit,
# equivalence, distributed, slow). Extra arguments go to ctest, e.g. -L unit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/python-env.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
