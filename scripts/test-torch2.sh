#!/usr/bin/env bash
# The test suite against libtorch 2.x (scripts/build-torch2.sh, build-torch2/): installs what is
# missing, builds, and runs ctest on the CPU. Extra arguments go to ctest, e.g. -L unit. The
# Python oracles are Debian's python3-torch (1.13), as in the default build (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/python-env.sh
scripts/build-torch2.sh
cd "${BUILD_DIR:-build-torch2}"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
