#!/usr/bin/env bash
# Runs pollgate's whole test suite on a fresh machine: installs what is missing (a C
# toolchain, redis-server, nginx, Chromium, Node.js and npm, a JDK; the browser tests' npm
# packages), then runs formatting, lint and layering checks, the unit and
# integration tests, and compiles the benchmarks. The integration tests then run a second
# time with every server keeping its state in Redis (the store of a cluster), and a third
# time on a Redis Cluster of three masters; the cluster tests run again on a Redis Cluster.
# Last, each fuzz target runs for about a minute (scripts/fuzz.sh, which installs
# cargo-fuzz). Each step's heading says when it began, so a slow step shows in the log.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

section() {
  echo "== $* [$(date -u +%H:%M:%S), ${SECONDS} s in]"
}

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
# The cluster tests and the Redis pass start real redis-server and nginx processes.
[ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# The browser tests drive Debian's Chromium through playwright-core (from npm, below).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# The Java interop tests compile and run Java 17 programs.
command -v javac >/dev/null || need_apt+=(openjdk-17-jdk-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is required (install Rust with rustup) and was not found" >&2
  exit 1
fi
section "npm ci (tests/browser: playwright-core, which drives /usr/bin/chromium)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true

section "cargo fmt --check"
cargo fmt --check
section "cargo clippy --all-targets"
cargo clippy --all-targets --quiet -- -D warnings
section "module layers (docs/ARCHITECTURE.md)"
./scripts/check-layers.py
section "cargo test (unit, integration, doc tests; benchmarks compiled)"
cargo test --all-targets --quiet
cargo test --doc --quiet

section "integration tests again, every server on the Redis store"
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis_dir=$(mktemp -d)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
  >"$redis_dir/log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; rm -rf "$redis_dir"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done
# The cluster and store fault tests (cluster, cluster_faults, store_faults, redis_cluster)
# start their own Redis; the rest are the core engine's suites.
suites=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case "$name" in
    cluster | cluster_faults | store_faults | redis_cluster) ;;
    *) suites+=(--test "$name") ;;
  esac
done
TEST_REDIS_URL="redis://127.0.0.1:$redis_port" cargo test --quiet "${suites[@]}"

section "integration tests a third time, every server on a Redis Cluster of three masters"
cluster_ports=()
cluster_pids=()
# A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
free_cluster_port() {
  python3 -c '
import random, socket
while True:
    port = random.randint(20000, 29999)
    try:
        for p in (port, port + 10000):
            socket.socket().bind(("127.0.0.1", p))
        print(port)
        break
    except OSError:
        pass'
}
for _ in 1 2 3; do
  port=$(free_cluster_port)
  mkdir -p "$redis_dir/$port"
  (cd "$redis_dir/$port" && exec redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --save "" --appendonly no >log 2>&1) &
  cluster_pids+=($!)
  cluster_ports+=("$port")
done
trap 'kill $redis_pid "${cluster_pids[@]}" 2>/dev/null; rm -rf "$redis_dir"' EXIT
for port in "${cluster_ports[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-yes >"$redis_dir/create.log"
for _ in $(seq 1 100); do
  redis-cli -p "${cluster_ports[0]}" CLUSTER INFO | grep -q cluster_state:ok && break
  sleep 0.1
done
seeds=$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}")
# All but the browser scenarios and the soak, the two longest, whose store steps the other
# suites make too (both ran on the Redis store above): the command stays under 30 minutes.
cluster_suites=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case "$name" in
    cluster | cluster_faults | store_faults | redis_cluster | browser | soak) ;;
    *) cluster_suites+=(--test "$name") ;;
  esac
done
TEST_REDIS_CLUSTER_NODES="${seeds%,}" cargo test --quiet "${cluster_suites[@]}"

section "cluster tests again, the nodes on a Redis Cluster of three masters"
TEST_REDIS_CLUSTER=1 cargo test --quiet --test cluster --test cluster_faults

# Five targets of 45 s each keep the step near four minutes once the targets are built.
section "fuzz (scripts/fuzz.sh: every target, 45 s each)"
./scripts/fuzz.sh 45
