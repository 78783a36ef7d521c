#!/usr/bin/env bash
# Two test hosts on this machine: network namespaces NAME-a (10.231.0.1) and NAME-b (10.231.0.2),
# each with its own loopback and one end of a veth pair (interface host0), and no other route.
# Traffic between them crosses the pair and nothing else. Needs root and iproute2.
#
#   scripts/two-hosts.sh up NAME               make both hosts (an old pair of that name is replaced)
#   scripts/two-hosts.sh shape NAME RATE [MS]  limit both directions to RATE (tc units: 1gbit,
#                                              100mbit); add MS milliseconds of latency each way
#                                              where the kernel has netem (it says when it has not)
#   scripts/two-hosts.sh cut NAME              take the link down (both ends)
#   scripts/two-hosts.sh kill NAME a|b         kill every process of one host (SIGKILL)
#   scripts/two-hosts.sh down NAME             kill every process of both hosts and remove them
#
# Run a command on a host with `ip netns exec NAME-a COMMAND`.
set -euo pipefail
verb="${1:-}"
name="${2:-}"
if [[ -z "$verb" || -z "$name" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
hosts=("$name-a" "$name-b")

down() {
  for h in "${hosts[@]}"; do
    if ip netns list | awk '{print $1}' | grep -qx "$h"; then
      pids=$(ip netns pids "$h" || true)
      [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
      ip netns del "$h"
    fi
  done
}

case "$verb" in
  up)
    down
    ip netns add "${hosts[0]}"
    ip netns add "${hosts[1]}"
    ip link add host0 netns "${hosts[0]}" type veth peer name host0 netns "${hosts[1]}"
    for i in 0 1; do
      ip -n "${hosts[$i]}" addr add "10.231.0.$((i + 1))/24" dev host0
      ip -n "${hosts[$i]}" link set host0 up
      ip -n "${hosts[$i]}" link set lo up
    done
    ;;
  shape)
    rate="${3:?shape needs a rate, e.g. 1gbit}"
    ms="${4:-0}"
    for h in "${hosts[@]}"; do
      ip netns exec "$h" tc qdisc del dev host0 root 2>/dev/null || true
      if [[ "$ms" != 0 ]] && ip netns exec "$h" tc qdisc add dev host0 root netem delay "${ms}ms" \
          rate "$rate" 2>/dev/null; then
        continue
      fi
      [[ "$ms" != 0 ]] && echo "two-hosts: this kernel has no netem: $rate without added latency" >&2
      # A bucket of a few milliseconds at the rate (at least 64 kB), a queue of 50 ms.
      ip netns exec "$h" tc qdisc add dev host0 root tbf rate "$rate" burst 512kb latency 50ms
    done
    ;;
  cut)
    for h in "${hosts[@]}"; do ip -n "$h" link set host0 down; done
    ;;
  kill)
    pids=$(ip netns pids "$name-${3:?kill needs the host, a or b}")
    if [[ -n "$pids" ]]; then kill -9 $pids; fi
    ;;
  down)
    down
    ;;
  *)
    echo "two-hosts: unknown verb '$verb' (up, shape, cut, kill, down)" >&2
    exit 2
    ;;
esac
