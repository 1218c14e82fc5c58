#!/usr/bin/env bash
# Instructions Redis spends per call of the limits' script (bff-core/src/limit/check.lua), counted
# by callgrind: eight requests of one user in one call, then eight users' requests in one call.
# Usage: bench/redis_script_cost.sh [check.lua]   (default: this tree's script)
# Needs redis-server, redis-cli, redis-benchmark and valgrind (callgrind_control).
set -euo pipefail
script=${1:-$(dirname "$0")/../bff-core/src/limit/check.lua}
calls=4000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# $1: a label; the rest: EVALSHA's arguments after the script's hash.
count() {
  local label=$1 sock=$work/redis.sock pid sha
  shift
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$label.out" \
    redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no >"$work/$label.log" 2>&1 &
  pid=$!
  until redis-cli -s "$sock" ping >/dev/null 2>&1; do
    kill -0 "$pid" || { cat "$work/$label.log"; exit 1; }
    sleep 0.2
  done
  sha=$(redis-cli -s "$sock" SCRIPT LOAD "$(cat "$script")")
  redis-benchmark -s "$sock" -n 500 -c 1 -q EVALSHA "$sha" "$@" >/dev/null   # warm-up, not counted
  callgrind_control -i on "$pid" >/dev/null 2>&1
  redis-benchmark -s "$sock" -n "$calls" -c 1 -q EVALSHA "$sha" "$@" >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  cat "$work/$label.out"* | awk -v label="$label" -v calls="$calls" \
    '/^summary:/ { s += $2 } END { printf "%s: %d instructions per call\n", label, s / calls }'
}

# Per group: requests, rate limits, quotas; per rate limit: interval (µs) and burst.
count "one user, 8 requests" 1 user:1 8 1 0 1 1000
keys=() args=()
for i in $(seq 1 8); do keys+=("user:$i"); args+=(1 1 0 1 1000); done
count "8 users, 1 request each" 8 "${keys[@]}" "${args[@]}"
