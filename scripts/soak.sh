#!/usr/bin/env bash
# A bounded soak of pollgate, outside CI: runs the release server on loopback with a 6 s
# session timeout (and closed sessions kept 60 s for the admin API instead of 600 s, so that
# memory levels off within the run instead of growing for its first ten minutes by design)
# and drives it for SECONDS (default 600) with the load tool's soak mode:
# connection churn (connections closed, abandoned, abandoned while their long-poll is held),
# 200 clients holding long-polls and recycling their connections, and a broadcast every
# half second. Every 10 s it prints a row: the server's RSS (VmRSS), live connectors
# (pollgate_connectors), held polls and open file descriptors (/proc/PID/fd). After the
# load it waits for the reaper and exits non-zero unless connectors and descriptors are back
# at their start (descriptors within 2), or if the server died or logged an error.
# Usage: ./scripts/soak.sh [seconds]     (SOAK_EVENTS=true: connect/disconnect events on)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 20 ]; then
  echo "usage: $0 [seconds, at least 20]" >&2
  exit 2
fi
events=${SOAK_EVENTS:-false}

cargo build --release --quiet --bins
mkdir -p target/soak
out="target/soak/soak-$(date +%Y%m%d-%H%M%S)"
work=$(mktemp -d)
mkdir -p "$work/fs/public"

POLLGATE_PORT=0 POLLGATE_SSLPORT=0 POLLGATE_BIND_ADDRESS=127.0.0.1 \
  POLLGATE_TIMEOUT=0.1 POLLGATE_SESSION_RETENTION=60 POLLGATE_ACCESS_LOG=false POLLGATE_FS_ROOT="$work/fs" \
  POLLGATE_BROADCAST_OPEN_EVENT=$events POLLGATE_BROADCAST_CLOSE_EVENT=$events \
  POLLGATE_BROADCAST_LOGIN_EVENT=$events POLLGATE_BROADCAST_LOGOUT_EVENT=$events \
  target/release/pollgate 2>"$out.server.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^pollgate listening on //p' "$out.server.log" | head -n 1)
  [ -n "$addr" ] && break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "pollgate did not start:" >&2
  cat "$out.server.log" >&2
  exit 1
fi

echo "soak: ${seconds} s against pollgate (pid $pid, $addr, session timeout 6 s, retention 60 s, events $events)"
status=0
# The table goes to the terminal as it comes; the whole report (RESULT line included) to $out.txt.
target/release/pollgate-load --addr "$addr" --pid "$pid" --duration "$seconds" \
  --wait-ms 3000 --req-timeout 30 --max-runtime $((seconds + 240)) \
  soak --pollers 200 --churners 8 --churn-pause-ms 20 --broadcast-ms 500 \
  --interval 10 --reap-wait 120 --fd-slack 2 \
  | tee "$out.txt" | grep --line-buffered -v '^RESULT ' | sed -u 's/ samples=\[.*\]$//' \
  || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL: the server is gone (log: $out.server.log)"
  exit 1
fi
errors=$(grep -c ' ERROR ' "$out.server.log" || true)
echo "server: alive, $errors error line(s) in its log; report in $out.txt, server log in $out.server.log"
if [ "$status" -ne 0 ]; then
  echo "FAIL: connectors or descriptors did not return to their start (or the load failed)"
  exit 1
fi
if [ "$errors" -ne 0 ]; then
  echo "FAIL: the server logged errors"
  exit 1
fi
echo "PASS: connectors and descriptors back at their start after the reaper"
