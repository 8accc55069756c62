#!/usr/bin/env bash
# A profile-guided build of the server: target/pgo/release/pollgate (under CARGO_TARGET_DIR
# when that is set).
#
#   ./scripts/build-pgo.sh
#
# 1. builds an instrumented server (target/pgo-gen) and the load tool (target/release);
# 2. trains it: the instrumented server runs on loopback (PGO_PORT, 3019 by default) under
#    the load tool's modes: handshake, echo through the long-poll, the one-request echo,
#    echo with ack and seq, targeted and broadcast, a few seconds each, memory store;
# 3. merges the profile with the llvm-profdata of rustc's own LLVM version (installed with
#    apt-get as llvm-<major> when it is missing) and builds the server with it.
#
# The benchmarks (bench-compare.sh, bench-cluster.sh) measure this build. `cargo build
# --release` is the same code without the profile (docs/PERFORMANCE.md gives both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${PGO_PORT:-3019}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GEN=$TARGET/pgo-gen
OUT=$TARGET/pgo
RAW=$GEN/profiles

# ---------------------------------------------------------------- llvm-profdata
# Its version must read the raw profiles of rustc's LLVM: take the same major version.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$major" ] || { echo "build-pgo: cannot tell rustc's LLVM version" >&2; exit 1; }
find_profdata() {
  for p in "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata"; do
    if command -v "$p" >/dev/null; then command -v "$p"; return 0; fi
  done
  return 1
}
if ! PROFDATA=$(find_profdata); then
  echo "build-pgo: installing llvm-$major for llvm-profdata"
  apt-get update -qq && apt-get install -y -qq "llvm-$major" >/dev/null
  PROFDATA=$(find_profdata) || { echo "build-pgo: no llvm-profdata for LLVM $major" >&2; exit 1; }
fi

# ---------------------------------------------------------------- instrumented build
cargo build --release --bin pollgate-load
# Build scripts and proc macros are instrumented too and write their profiles while the
# build runs: into $RAW/build, which is not merged.
RUSTFLAGS="-Cprofile-generate=$RAW/build" CARGO_TARGET_DIR=$GEN cargo build --release --bin pollgate

# ---------------------------------------------------------------- training
rm -rf "$RAW/train"
mkdir -p "$RAW/train" "$OUT"
ulimit -n "$(ulimit -Hn)"
# The settings the benchmarks run the server with (BENCH_ENV).
. "$ROOT/scripts/bench-env.sh"
env "${BENCH_ENV[@]}" POLLGATE_PORT="$PORT" LLVM_PROFILE_FILE="$RAW/train/pollgate-%p.profraw" \
  "$GEN/release/pollgate" >"$GEN/train.log" 2>&1 &
SPID=$!
trap 'kill "$SPID" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$SPID" 2>/dev/null || { echo "build-pgo: the server did not start (see $GEN/train.log)" >&2; exit 1; }
  sleep 0.05
done
load() {
  echo "build-pgo: training: $*"
  timeout 60 "$TARGET/release/pollgate-load" --addr "127.0.0.1:$PORT" --pid "$SPID" \
    --warmup 0 --duration 3 "$@" | tail -n 1 | cut -c 1-100
}
load handshake -c 64
load echo -c 10
load echo -c 100
load echo -c 10 --direct
load echo -c 100 --ack --seq
load targeted -c 1000
load broadcast -c 1000
# The profile is written when the process exits: stop it as an operator would.
kill -INT "$SPID"
wait "$SPID"
trap - EXIT
ls "$RAW"/train/*.profraw >/dev/null 2>&1 || { echo "build-pgo: the server wrote no profile" >&2; exit 1; }

# ---------------------------------------------------------------- the optimised build
"$PROFDATA" merge -o "$OUT/pollgate.profdata" "$RAW"/train/*.profraw
RUSTFLAGS="-Cprofile-use=$OUT/pollgate.profdata" CARGO_TARGET_DIR=$OUT cargo build --release --bin pollgate
echo "build-pgo: $OUT/release/pollgate"
