# The pollgate server settings shared by every benchmark and by the PGO training, so that the
# profile is trained on the configuration the benchmarks measure. Sourced, not run:
#
#   . scripts/bench-env.sh
#   env "${BENCH_ENV[@]}" POLLGATE_PORT=3003 target/pgo/release/pollgate
#
# - loopback only, no HTTPS port, log level warn (the access log, at info, is not written);
# - no connection limit: the handshake test opens connections without closing them (as the
#   peers' does), the idle tests hold 10,000 polls and, at the descriptor limit, ~20,000;
# - no open/close/login/logout events: the peers send no such events, and with events on
#   every open would queue one packet to each of the other connectors.
BENCH_ENV=(
  POLLGATE_BIND_ADDRESS=127.0.0.1 POLLGATE_SSLPORT=0 POLLGATE_LOG_LEVEL=warn
  POLLGATE_MAXCONNECTIONS=1000000
  POLLGATE_BROADCAST_OPEN_EVENT=false POLLGATE_BROADCAST_CLOSE_EVENT=false
  POLLGATE_BROADCAST_LOGIN_EVENT=false POLLGATE_BROADCAST_LOGOUT_EVENT=false
)
