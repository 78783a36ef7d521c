#!/usr/bin/env bash
# Writes the held-out corpus that accuracy claims are checked on besides fortunes: the King James
# Bible (public domain, Debian's bible-kjv), 4.2 MB of English prose, as plain text with the verse
# numbers removed. Nothing was tuned on it. Prints the file's path.
# Env: OUT (build/heldout/kjv.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/heldout/kjv.txt}"
if [ ! -s "$out" ]; then
  command -v bible >/dev/null || {
    echo "error: the bible command is missing (hint: apt-get install bible-kjv)" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  bible "Gen1:1-Rev22:21" | sed -E 's/^ +[0-9]+ //' > "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
