#!/usr/bin/env python3
"""Summarise a Chrome trace from `bench_step --profile FILE`: time per libtorch op, biggest first.

Usage: bench/profile_summary.py FILE [TOP]   (TOP rows, default 25)

Times include the ops each op called (aten::matmul includes its aten::bmm), so rows overlap and
do not add up to the step time. The profiler slows the run; compare rows, not absolute times.
"""
import collections
import json
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(sys.argv[1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    if not total:
        print(f"error: {sys.argv[1]} holds no timed events (hint: profile at least one step)",
              file=sys.stderr)
        return 1
    print(f"{'ms':>10} {'calls':>7}  op")
    for name, us in total.most_common(top):
        print(f"{us / 1e3:10.1f} {count[name]:7d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
