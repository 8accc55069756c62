#!/usr/bin/env bash
# Side-by-side benchmark: pollgate against the peer servers in benches/peers
# (hyper HTTP floor, socket.io on Node, socketioxide). Every test gets a FRESH
# server process pinned to CPU 0; the load generator runs pinned to CPU 1.
# Only 127.0.0.1 is used.
#
#   ./scripts/bench-compare.sh build [peers|pollgate]   build the peers (cargo, npm ci), and/or
#                                                       cargo build --release --bins here,
#                                                       then the profile-guided server
#                                                       (scripts/build-pgo.sh)
#   ./scripts/bench-compare.sh suite [SERVERS...]       whole suite (the default command),
#                                                       then the markdown report + echo plot
#   ./scripts/bench-compare.sh one SERVER ARGS...       one fresh-server run, e.g.
#   ./scripts/bench-compare.sh one pollgate --duration 5 echo -c 100 --ack --seq
#
# SERVER is one of: baseline (hyper, :3000), node (socket.io, :3001),
# sioxide (socketioxide, :3002) — all driven by the peers' load tool (peer-load, an
# engine.io polling client) — and pollgate (:3003), driven by our own
# target/release/pollgate-load. `one` also takes rawfloor (:3004, benches/peers/rust/src/bin/raw-floor.rs:
# the floor's answer from a hand-written HTTP loop instead of hyper), driven by
# peer-load's `floor` mode.
#
# Environment:
#   SERVERS="baseline sioxide"  subset for `suite` (positional args win)
#   DUR=10 WARM=2               measured / warmup seconds of the timed tests
#   SERVER_CPU=0 LOADGEN_CPU=1  CPU pinning
#   LOAD_TIMEOUT=120            seconds before `timeout` ends one load run (churn: CHURN_TIMEOUT=300)
#   NO_BUILD=1                  `suite`/`one` do not build anything first
#   PG=target/release/pollgate  the server measured (default: target/pgo/release/pollgate)
#   LOG=path                    log file (default docs/perf/run-<stamp>.log)
#
# Results: human lines + `RESULT {json}` lines go to docs/perf/run-<stamp>.log,
# server stdout/stderr to docs/perf/run-<stamp>.log.server. `suite` then writes
# docs/perf/report-<stamp>.md and docs/perf/echo.png with scripts/perf_report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PEERS=$ROOT/benches/peers                     # the peers: rust/ (cargo), socketio/ (npm)
PEERS_BIN=$PEERS/rust/target/release          # their own target directory, not the crate's
LG=$PEERS_BIN/peer-load                       # the peers' load tool
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Our server: the profile-guided build (scripts/build-pgo.sh); PG=target/release/pollgate
# measures the plain release build instead.
PG=${PG:-$TARGET_DIR/pgo/release/pollgate}
PL=$TARGET_DIR/release/pollgate-load          # our load generator

SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
DUR=${DUR:-10}
WARM=${WARM:-2}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-120}
CHURN_TIMEOUT=${CHURN_TIMEOUT:-300}

STAMP=$(date +%Y%m%d-%H%M%S)
LOG=${LOG:-$ROOT/docs/perf/run-$STAMP.log}
# The server settings pollgate runs with (BENCH_ENV).
. "$ROOT/scripts/bench-env.sh"

# 10k idle clients need ~10k fds in each process; raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- build

# Build the peers where they are: cargo keeps the Rust ones up to date by itself (with the
# versions of their Cargo.lock), npm ci installs the socket.io peer's package-lock.json.
build_peers() {
  (cd "$PEERS/rust" && CARGO_TARGET_DIR="$PEERS/rust/target" cargo build --release --locked)
  if [ ! -d "$PEERS/socketio/node_modules" ] || \
     [ "$PEERS/socketio/package-lock.json" -nt "$PEERS/socketio/node_modules" ]; then
    (cd "$PEERS/socketio" && npm ci --no-audit --no-fund)
  fi
}

build_pollgate() {
  cargo build --release --bins
  ./scripts/build-pgo.sh
}

# Build what the given servers need (skipped with NO_BUILD=1).
build_for() {
  [ "${NO_BUILD:-0}" = 1 ] && return 0
  local need_peers=0 need_pollgate=0 s
  for s in "$@"; do
    case "$s" in
      pollgate) need_pollgate=1 ;;
      *) need_peers=1 ;;
    esac
  done
  [ $need_peers = 1 ] && build_peers
  [ $need_pollgate = 1 ] && build_pollgate
  return 0
}

# ---------------------------------------------------------------- servers

SPID=""
PORT=""

cleanup() {
  if [ -n "$SPID" ]; then
    kill "$SPID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # the EXIT trap then kills the server

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_server SERVER [churn]: starts a fresh server on CPU $SERVER_CPU, sets SPID and PORT.
# `taskset` (and `env`) exec the server, so $! is the server's own pid.
start_server() {
  local server=$1 churn=${2:-}
  case "$server" in
    baseline) PORT=3000 ;;
    node)     PORT=3001 ;;
    sioxide)  PORT=3002 ;;
    pollgate) PORT=3003 ;;
    rawfloor) PORT=3004 ;;
    *) echo "unknown server $server (baseline node sioxide pollgate rawfloor)" >&2; exit 2 ;;
  esac
  # A leftover process on the port would be measured instead of ours.
  if port_open "$PORT"; then
    echo "port $PORT is already in use; stop that process first" >&2
    exit 1
  fi
  case "$server" in
    baseline) PORT=$PORT taskset -c "$SERVER_CPU" "$PEERS_BIN/hyper-floor" >>"$LOG.server" 2>&1 & ;;
    node)     PORT=$PORT taskset -c "$SERVER_CPU" node "$PEERS/socketio/server.js" >>"$LOG.server" 2>&1 & ;;
    sioxide)  PORT=$PORT taskset -c "$SERVER_CPU" "$PEERS_BIN/sioxide-server" >>"$LOG.server" 2>&1 & ;;
    rawfloor) PORT=$PORT taskset -c "$SERVER_CPU" "$PEERS_BIN/raw-floor" >>"$LOG.server" 2>&1 & ;;
    pollgate)
      local penv=("${BENCH_ENV[@]}" POLLGATE_PORT=$PORT)
      # churn: connectors time out after 0.1 minutes so the reaper runs during the test, and
      # closed sessions are not kept for the admin API (session_retention, 10 minutes by
      # default), so what is measured is what abandoned connectors leave behind.
      [ "$churn" = churn ] && penv+=(POLLGATE_TIMEOUT=0.1 POLLGATE_SESSION_RETENTION=0)
      env "${penv[@]}" taskset -c "$SERVER_CPU" "$PG" >>"$LOG.server" 2>&1 &
      ;;
  esac
  SPID=$!
  # Wait (up to 10 s) until the port accepts connections.
  for _ in $(seq 1 200); do
    if port_open "$PORT"; then return 0; fi
    if ! kill -0 "$SPID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "server $server did not start (see $LOG.server)" >&2
  kill "$SPID" 2>/dev/null || true
  SPID=""
  exit 1
}

stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
  sleep 0.5
}

# ---------------------------------------------------------------- runs

# one SERVER LABEL LOAD-ARGS...: fresh server, one load run, server stopped.
one() {
  local server=$1 label=$2; shift 2
  local tool=$LG name=peer-load limit=$LOAD_TIMEOUT churn=""
  if [ "$server" = pollgate ]; then tool=$PL; name=pollgate-load; fi
  # The churn mode needs the short connector timeout and more time.
  case " $* " in *" churn "*) churn=churn; limit=$CHURN_TIMEOUT ;; esac
  [ -x "$tool" ] || { echo "missing $tool (run: $0 build)" >&2; exit 1; }

  start_server "$server" "$churn"
  echo "### $server $label :: $name --addr 127.0.0.1:$PORT --pid <server> $*" | tee -a "$LOG"
  set +e
  timeout "$limit" taskset -c "$LOADGEN_CPU" "$tool" --addr "127.0.0.1:$PORT" --pid "$SPID" \
      --label "$server/$label" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "### $server/$label: $name exited with status $rc (124 = timeout)" | tee -a "$LOG"
  fi
  if ! kill -0 "$SPID" 2>/dev/null; then
    echo "### $server/$label: the server died during the run" | tee -a "$LOG"
  fi
  stop_server
}

suite_for() {
  local s=$1
  local T=(--duration "$DUR" --warmup "$WARM")
  case "$s" in
    baseline)
      one baseline floor-c64 "${T[@]}" floor -c 64
      one baseline idle-plain-c1000 idle -c 1000 --plain /
      one baseline idle-plain-c10000 idle -c 10000 --plain /
      ;;
    node|sioxide)
      # Bare handshakes leave sessions open until the ping timeout: keep it short.
      one "$s" handshake-c64 --duration 5 --warmup 1 handshake -c 64
      for n in 1 10 100 1000; do
        one "$s" "echo-c$n" "${T[@]}" echo -c "$n"
      done
      one "$s" idle-c1000 idle -c 1000
      one "$s" idle-c10000 idle -c 10000
      one "$s" broadcast-c1000 "${T[@]}" broadcast -c 1000
      ;;
    pollgate)
      one pollgate handshake-c64 --duration 5 --warmup 1 handshake -c 64
      for n in 1 10 100 1000; do
        one pollgate "echo-c$n" "${T[@]}" echo -c "$n"
      done
      # The reply in the send's own response (a system echo token): one request per round trip.
      for n in 1 10 100 1000; do
        one pollgate "echo-direct-c$n" "${T[@]}" echo -c "$n" --direct
      done
      # ack+seq overhead: compared with a plain echo-c100 run straight after it
      # (echo-c100-ref), so both runs see the same machine state.
      one pollgate echo-ack-seq-c100 "${T[@]}" echo -c 100 --ack --seq
      one pollgate echo-c100-ref "${T[@]}" echo -c 100
      one pollgate targeted-c1000 "${T[@]}" targeted -c 1000
      one pollgate broadcast-c1000 "${T[@]}" broadcast -c 1000
      one pollgate idle-c1000 idle -c 1000
      one pollgate idle-c10000 idle -c 10000
      # As many held polls as the descriptor limit allows: one on every descriptor the
      # server does not use itself (listener, epoll, stdio, ...).
      one pollgate idle-fdmax idle --fill
      one pollgate churn-c10000 --max-runtime 250 churn -c 10000 --rounds 3 --settle 15
      ;;
    *) echo "unknown server $s (baseline node sioxide pollgate)" >&2; exit 2 ;;
  esac
}

header() {
  local rustc_v pg_rev
  rustc_v=$(rustc --version | cut -d' ' -f2)
  pg_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then pg_rev="$pg_rev+dirty"; fi
  echo "# $(date -Is) nproc=$(nproc) kernel=$(uname -r) node=$(node --version) rustc=$rustc_v" \
       "pollgate=$pg_rev pollgate_bin=${PG#"$ROOT"/} DUR=$DUR WARM=$WARM servers=$*" | tee -a "$LOG"
}

# Markdown report + echo plot for this run's log.
report() {
  local out=$ROOT/docs/perf/report-$STAMP.md plot=()
  python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib || true
  if python3 -c 'import matplotlib' 2>/dev/null; then
    plot=(--plot "$ROOT/docs/perf/echo.png")
  else
    echo "matplotlib is not available: no plot" >&2
  fi
  python3 "$ROOT/scripts/perf_report.py" "${plot[@]}" "$LOG" >"$out"
  echo "report: $out"
  [ ${#plot[@]} -gt 0 ] && echo "plot: $ROOT/docs/perf/echo.png"
  return 0
}

cmd=${1:-suite}; shift || true
case "$cmd" in
  build)
    what=${1:-all}
    case "$what" in
      all)      build_peers; build_pollgate ;;
      peers)    build_peers ;;
      pollgate) build_pollgate ;;
      *) echo "build what? (peers, pollgate, or nothing for both)" >&2; exit 2 ;;
    esac
    ;;
  suite)
    mkdir -p docs/perf
    servers=("$@")
    if [ ${#servers[@]} -eq 0 ]; then
      read -r -a servers <<<"${SERVERS:-baseline node sioxide pollgate}"
    fi
    for s in "${servers[@]}"; do
      case "$s" in baseline|node|sioxide|pollgate) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
    done
    build_for "${servers[@]}"
    header "${servers[*]}"
    for s in "${servers[@]}"; do suite_for "$s"; done
    echo "log: $LOG"
    report
    ;;
  one)
    [ $# -ge 2 ] || { echo "usage: $0 one SERVER LOAD-ARGS..." >&2; exit 2; }
    s=$1; shift
    mkdir -p docs/perf
    build_for "$s"
    one "$s" adhoc "$@"
    echo "log: $LOG"
    ;;
  *) sed -n 2,30p "$0"; exit 2 ;;
esac
