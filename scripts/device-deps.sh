#!/usr/bin/env bash
# Gathers into .device-deps/ (ignored) what a GPU machine without network or Debian packages
# lacks to build the project against its own torch: the CLI11 and nlohmann-json headers with their
# CMake package files, and the googletest sources (built there by scripts/device-check.sh). Run it
# here, then carry .device-deps to that machine. About 5 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
d=.device-deps
rm -rf "$d"
mkdir -p "$d/include" "$d/share/cmake"
cp -r /usr/include/CLI /usr/include/nlohmann "$d/include/"
cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$d/share/cmake/"
cp -r /usr/src/googletest "$d/googletest"
echo "device-deps: $(du -sh "$d" | cut -f1) in $d (carry it with the device check)"
