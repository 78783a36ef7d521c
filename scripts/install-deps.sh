#!/usr/bin/env bash
# Installs the Debian packages ouroboros needs, skipping those already present.
set -euo pipefail

packages=(
  g++ cmake make pkg-config ccache
  libtorch-dev libgloo-dev libopenblas0-openmp
  libgtest-dev googletest
  libcli11-dev nlohmann-json3-dev libsentencepiece-dev libpcre2-dev
  python3-torch python3-numpy python3-venv python3-sentencepiece
  gnuplot-nox
  clang clang-format libclang-rt-14-dev
  fortunes fortunes-min bible-kjv
  iproute2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
