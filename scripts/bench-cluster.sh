#!/usr/bin/env bash
# Cluster figures: targeted delivery (a sender to one of N held polls) and echo through
#   pollgate-memory    one node, memory store (the reference)
#   pollgate-redis     one node, Redis store
#   pollgate-cluster3  three nodes on one Redis, behind nginx round robin (no stickiness):
#                      a send and the poll it wakes mostly land on different nodes
#   pollgate-rcluster1 one node on a Redis Cluster of three masters
#   pollgate-rcluster3 three nodes on that Redis Cluster, behind nginx round robin
# On a Redis Cluster the Redis CPU is the sum of the three masters'.
# Everything on 127.0.0.1; servers, Redis and nginx share CPU 0, the load tool runs on CPU 1.
# Every run is bounded (warm-up + duration, `timeout`).
# It ends with the three figures of issue 31 side by side: Redis CPU per echo (utime+stime
# of the redis-server process, from /proc, over the measured window, divided by the echoes),
# the echo throughput of one node on Redis against one on the memory store (10 clients), and
# the p99 of targeted delivery through three nodes behind nginx (1,000 clients).
#
#   ./scripts/bench-cluster.sh            # builds release and the profile-guided server
#                                         # (scripts/build-pgo.sh), then writes docs/perf/cluster-<stamp>.log
#   python3 scripts/perf_report.py docs/perf/cluster-*.log
#
# Needs redis-server and nginx (./scripts/test.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${DUR:-10}
WARM=${WARM:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# The profile-guided build, as bench-compare.sh measures; PG=target/release/pollgate for the
# plain release build.
PG=${PG:-$TARGET_DIR/pgo/release/pollgate}
PL=$TARGET_DIR/release/pollgate-load
REDIS_PORT=${REDIS_PORT:-3020}
NGINX_PORT=${NGINX_PORT:-3010}
read -r -a NODE_PORTS <<<"${NODE_PORTS:-3011 3012 3013}"
REDIS_PID=""
# A Redis Cluster node also listens on its port + 10000 (the cluster bus).
read -r -a CLUSTER_PORTS <<<"${CLUSTER_PORTS:-3021 3022 3023}"
CLUSTER_PIDS=()

# The server settings every benchmark runs with (BENCH_ENV).
. "$ROOT/scripts/bench-env.sh"

if [ "${NO_BUILD:-}" != 1 ]; then
  cargo build --release --bins --quiet
  ./scripts/build-pgo.sh
fi
mkdir -p docs/perf
STAMP=$(date +%Y%m%d-%H%M%S)
LOG=${LOG:-$ROOT/docs/perf/cluster-$STAMP.log}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1 (see $WORK)" >&2
  exit 1
}

start_redis() {
  taskset -c "$SERVER_CPU" redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=($!)
  wait_port $REDIS_PORT
}

# start_redis_cluster: three masters, no replicas, on CPU 0.
start_redis_cluster() {
  CLUSTER_PIDS=()
  for p in "${CLUSTER_PORTS[@]}"; do
    mkdir -p "$WORK/cluster-$p"
    rm -f "$WORK/cluster-$p/nodes.conf"
    taskset -c "$SERVER_CPU" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --dir "$WORK/cluster-$p" \
      >"$WORK/cluster-$p/log" 2>&1 &
    PIDS+=($!)
    CLUSTER_PIDS+=($!)
  done
  for p in "${CLUSTER_PORTS[@]}"; do wait_port "$p"; done
  redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-yes >"$WORK/cluster-create.log"
  for _ in $(seq 1 100); do
    redis-cli -p "${CLUSTER_PORTS[0]}" CLUSTER INFO | grep -q cluster_state:ok && return 0
    sleep 0.1
  done
  echo "the Redis Cluster did not come up (see $WORK)" >&2
  exit 1
}

# start_node PORT STORE [SEEDS]: one pollgate node on CPU 0; with SEEDS, on that Redis Cluster.
start_node() {
  env "${BENCH_ENV[@]}" POLLGATE_PORT="$1" POLLGATE_STORE="$2" \
    POLLGATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" POLLGATE_REDIS_PREFIX="bench$STAMP:" \
    POLLGATE_REDIS_CLUSTER_NODES="${3:-}" POLLGATE_TRUSTED_PROXIES=127.0.0.1 \
    taskset -c "$SERVER_CPU" "$PG" >>"$WORK/node-$1.log" 2>&1 &
  PIDS+=($!)
  wait_port "$1"
}

start_nginx() {
  local servers=""
  for p in "${NODE_PORTS[@]}"; do servers+="server 127.0.0.1:$p max_fails=0; "; done
  # The proxy settings of conf/nginx-cluster.conf; paths kept in the scratch folder.
  cat >"$WORK/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err warn;
events { worker_connections 16384; }
http {
  access_log off; client_body_temp_path $WORK/b; proxy_temp_path $WORK/p;
  fastcgi_temp_path $WORK/f; uwsgi_temp_path $WORK/u; scgi_temp_path $WORK/s;
  upstream pollgate { $servers keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; location / {
    proxy_pass http://pollgate; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_buffering off;
    proxy_read_timeout 60s; proxy_next_upstream error timeout non_idempotent; } }
}
EOF
  ulimit -n "$(ulimit -Hn)"
  taskset -c "$SERVER_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" &
  PIDS+=($!)
  wait_port $NGINX_PORT
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

# run LABEL PORT LOAD-ARGS...
run() {
  local label=$1 port=$2
  shift 2
  echo "### $label :: pollgate-load --addr 127.0.0.1:$port $*" | tee -a "$LOG"
  ulimit -n "$(ulimit -Hn)"
  taskset -c "$LOADGEN_CPU" timeout 120 "$PL" --addr "127.0.0.1:$port" --label "$label" \
    --duration "$DUR" --warmup "$WARM" "$@" 2>&1 | tee -a "$LOG" || echo "### $label: failed" | tee -a "$LOG"
}

echo "# $(date -Is) nproc=$(nproc) kernel=$(uname -r) redis=$(redis-server --version | awk '{print $3}') pollgate=$(git rev-parse --short HEAD) pollgate_bin=${PG#"$ROOT"/} DUR=$DUR WARM=$WARM" | tee "$LOG"

seeds=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
seeds=${seeds%,}
for setup in memory redis cluster3 rcluster1 rcluster3; do
  case $setup in
    memory) start_node "${NODE_PORTS[0]}" memory; port=${NODE_PORTS[0]} ;;
    redis) start_redis; start_node "${NODE_PORTS[0]}" redis; port=${NODE_PORTS[0]} ;;
    cluster3)
      start_redis
      for p in "${NODE_PORTS[@]}"; do start_node "$p" redis; done
      start_nginx
      port=$NGINX_PORT
      ;;
    rcluster1) start_redis_cluster; start_node "${NODE_PORTS[0]}" redis "$seeds"; port=${NODE_PORTS[0]} ;;
    rcluster3)
      start_redis_cluster
      for p in "${NODE_PORTS[@]}"; do start_node "$p" redis "$seeds"; done
      start_nginx
      port=$NGINX_PORT
      ;;
  esac
  run "pollgate-$setup/targeted-c1000" "$port" targeted -c 1000
  run "pollgate-$setup/echo-c100" "$port" echo -c 100
  # Echo at 10 clients; on Redis the load tool samples redis-server's CPU (--pid; on a
  # Redis Cluster, the masters' summed) over the measured window, so its
  # server_cpu_us_per_op is Redis CPU per echo.
  pid_args=()
  case $setup in
    redis | cluster3) pid_args=(--pid "$REDIS_PID") ;;
    rcluster*) pid_args=(--pid "$(IFS=,; echo "${CLUSTER_PIDS[*]}")") ;;
  esac
  run "pollgate-$setup/echo-c10" "$port" "${pid_args[@]}" echo -c 10
  stop_all
done

# field LABEL KEY: KEY's value on the result line of LABEL in this run's log.
field() {
  grep "^label=$1 " "$LOG" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}
mem_ops=$(field pollgate-memory/echo-c10 ops_per_s)
redis_ops=$(field pollgate-redis/echo-c10 ops_per_s)
redis_cpu=$(field pollgate-redis/echo-c10 server_cpu_us_per_op)
p99=$(field pollgate-cluster3/targeted-c1000 p99_ms)
rc_cpu=$(field pollgate-rcluster1/echo-c10 server_cpu_us_per_op)
rc3_cpu=$(field pollgate-rcluster3/echo-c10 server_cpu_us_per_op)
rc3_p99=$(field pollgate-rcluster3/targeted-c1000 p99_ms)
ratio=$(awk -v a="${redis_ops:-0}" -v b="${mem_ops:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
{
  echo "## issue 31 figures (target: Redis CPU/echo <= 10 us, redis/memory echo >= 0.5, cluster3 targeted p99 <= 2 ms)"
  echo "redis_cpu_us_per_echo=${redis_cpu:-n/a} echo_ops_redis=${redis_ops:-n/a} echo_ops_memory=${mem_ops:-n/a} redis_over_memory=$ratio cluster3_targeted_c1000_p99_ms=${p99:-n/a}"
  echo "## on a Redis Cluster of three masters (Redis CPU summed over the masters)"
  echo "rcluster1_redis_cpu_us_per_echo=${rc_cpu:-n/a} rcluster3_redis_cpu_us_per_echo=${rc3_cpu:-n/a} rcluster3_targeted_c1000_p99_ms=${rc3_p99:-n/a}"
} | tee -a "$LOG"
echo "log: $LOG"
