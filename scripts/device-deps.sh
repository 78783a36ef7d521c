#!/usr/bin/env bash
# Gathers into .device-deps/ (ignored) what a GPU machine without network or Debian packages
# lacks to build the project against its own torch: the CLI11 and nlohmann-json headers with their
# CMake package files, PCRE2's header and static library with a pkg-config file (CMake finds it
# through CMAKE_PREFIX_PATH), and the googletest sources (built there by scripts/device-check.sh).
# Run it here, then carry .device-deps to that machine. About 6 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
d=.device-deps
rm -rf "$d"
mkdir -p "$d/include" "$d/share/cmake"
cp -r /usr/include/CLI /usr/include/nlohmann "$d/include/"
cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$d/share/cmake/"
cp -r /usr/src/googletest "$d/googletest"
mkdir -p "$d/lib/pkgconfig"
cp /usr/include/pcre2.h "$d/include/"
cp "$(pkg-config --variable=libdir libpcre2-8)/libpcre2-8.a" "$d/lib/"
cat > "$d/lib/pkgconfig/libpcre2-8.pc" <<EOF
prefix=\${pcfiledir}/../..
Name: libpcre2-8
Description: PCRE2's 8-bit library, static, carried by scripts/device-deps.sh
Version: $(pkg-config --modversion libpcre2-8)
Libs: -L\${prefix}/lib -lpcre2-8
Cflags: -I\${prefix}/include
EOF
echo "device-deps: $(du -sh "$d" | cut -f1) in $d (carry it with the device check)"
