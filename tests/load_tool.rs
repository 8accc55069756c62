//! The load tool `pollgate-load` against a real server: every mode runs briefly and reports
//! figures that prove the traffic really flowed (counts, deliveries, connectors reaped).

mod support;

use std::process::Command;

use support::Server;

/// Events off, as in the benchmarks: open/close events would add traffic of their own.
const QUIET: &[(&str, &str)] = &[
    ("BROADCAST_OPEN_EVENT", "false"),
    ("BROADCAST_CLOSE_EVENT", "false"),
    ("BROADCAST_LOGIN_EVENT", "false"),
    ("BROADCAST_LOGOUT_EVENT", "false"),
];

/// Runs the load tool against `server` with short phases; returns its RESULT object.
fn load(server: &Server, mode: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate-load"))
        .args(["--addr", &server.addr.to_string(), "--pid", &server.pid().to_string()])
        .args(["--duration", "1", "--warmup", "0.2", "--max-runtime", "60"])
        .args(mode)
        .output()
        .expect("run pollgate-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pollgate-load {mode:?} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn num(result: &serde_json::Value, key: &str) -> f64 {
    result[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {result}"))
}

/// Echo round trips flow without errors, with the figures the peers' tool reports, and the
/// connection ids the clients sent never reach the server's log.
#[test]
fn echo_reports_round_trips_and_server_cost() {
    let server = Server::start(QUIET);
    let plain = load(&server, &["echo", "-c", "4"]);
    assert_eq!(num(&plain, "errors"), 0.0, "{plain}");
    assert!(num(&plain, "count") > 0.0 && num(&plain, "ops_per_s") > 0.0, "{plain}");
    for key in ["p50_ms", "p99_ms", "server_cpu_us_per_op", "server_rss_mb"] {
        assert!(num(&plain, key) > 0.0, "{key} in {plain}");
    }
    let acked = load(&server, &["echo", "-c", "4", "--ack", "--seq"]);
    assert_eq!(num(&acked, "errors"), 0.0, "{acked}");
    assert!(num(&acked, "count") > 0.0, "{acked}");
    // The reply in the send's response: every round trip checked its data and utid.
    let direct = load(&server, &["echo", "-c", "4", "--direct"]);
    assert_eq!((num(&direct, "errors"), &direct["direct"]), (0.0, &serde_json::json!(true)), "{direct}");
    assert!(num(&direct, "count") > 0.0, "{direct}");
    assert!(!server.log().contains("load-"), "a connection id was logged");
}

/// Handshakes (open + welcome) repeat on keep-alive connections.
#[test]
fn handshake_opens_connections() {
    let server = Server::start(QUIET);
    let r = load(&server, &["handshake", "-c", "2", "--close"]);
    assert_eq!(num(&r, "errors"), 0.0, "{r}");
    assert!(num(&r, "count") > 0.0, "{r}");
}

/// Targeted sends reach held polls; broadcasts reach every receiver in every round.
#[test]
fn deliveries_to_held_polls() {
    let server = Server::start(QUIET);
    let targeted = load(&server, &["targeted", "-c", "20"]);
    assert_eq!(num(&targeted, "errors"), 0.0, "{targeted}");
    assert_eq!(num(&targeted, "receiver_errors"), 0.0, "{targeted}");
    assert!(num(&targeted, "count") > 0.0, "{targeted}");
    let broadcast = load(&server, &["broadcast", "-c", "20"]);
    assert_eq!(num(&broadcast, "receivers"), 20.0, "{broadcast}");
    assert_eq!(num(&broadcast, "rounds_incomplete"), 0.0, "{broadcast}");
    assert!(num(&broadcast, "rounds_done") > 0.0, "{broadcast}");
    assert!(num(&broadcast, "deliveries_per_s") > 0.0, "{broadcast}");
}

/// Idle clients all hold a poll and the tool measures the server's memory per client and
/// its descriptors.
#[test]
fn idle_clients_hold_polls() {
    let server = Server::start(QUIET);
    let r = load(&server, &["idle", "-c", "50", "--settle", "0.5", "--hold", "0.2"]);
    assert_eq!(num(&r, "holding_at_sample"), 50.0, "{r}");
    assert_eq!(num(&r, "errors"), 0.0, "{r}");
    assert!(num(&r, "server_rss_after_mb") > 0.0, "{r}");
    // One descriptor per held poll, and the limit they count against.
    assert!(num(&r, "server_fds") >= 50.0, "{r}");
    assert!(num(&r, "server_fd_limit") >= num(&r, "server_fds"), "{r}");
}

/// `idle --fill` holds a poll on every descriptor the server has left: with the server's
/// limit lowered to 256, all 256 are in use at the sample, every client holding its poll.
#[test]
fn idle_fill_holds_a_poll_on_every_descriptor_left() {
    let server = Server::start(QUIET);
    server.limit_descriptors(256);
    let r = load(&server, &["idle", "--fill", "--settle", "0.5", "--hold", "0.2"]);
    assert_eq!(num(&r, "server_fd_limit"), 256.0, "{r}");
    assert_eq!(num(&r, "server_fds"), 256.0, "{r}");
    // The server's own descriptors (listeners, epoll, stdio, ...) are a few dozen at most.
    assert!(num(&r, "clients") > 200.0, "{r}");
    assert_eq!(num(&r, "holding_at_sample"), num(&r, "clients"), "{r}");
    assert_eq!(num(&r, "errors"), 0.0, "{r}");
}

/// Abandoned connections are all reaped: the count the tool reads back returns to zero.
/// The warm-up burst comes first and is reaped too, so the rounds count only their own.
#[test]
fn churn_leaves_no_connectors() {
    // 0.05 minutes = 3 s of inactivity.
    let server = Server::start(&[QUIET, &[("TIMEOUT", "0.05")]].concat());
    let args = [
        "churn",
        "-c",
        "200",
        "--rounds",
        "2",
        "--warm-up",
        "30",
        "--concurrency",
        "8",
        "--reap-wait",
        "20",
        "--settle",
        "0.5",
    ];
    let r = load(&server, &args);
    assert_eq!(num(&r, "errors"), 0.0, "{r}");
    assert_eq!(num(&r, "warm_up"), 30.0, "{r}");
    assert_eq!(num(&r, "connectors_at_peak"), 200.0, "{r}");
    assert_eq!(r["connectors_left_per_round"], serde_json::json!([0, 0]), "{r}");
    assert!(num(&r, "rss_cold_mb") > 0.0, "{r}");
    assert!(num(&r, "rss_start_mb") > 0.0, "{r}");
    assert!(num(&r, "rss_end_mb") > 0.0, "{r}");
}

/// When churn's counting connection is itself reaped (here the timeout, 0.6 s, is shorter
/// than the second between its counts), the tool stops and its error says where it was.
#[test]
fn churn_says_where_its_count_failed() {
    // 0.01 minutes = 0.6 s of inactivity.
    let server = Server::start(&[QUIET, &[("TIMEOUT", "0.01")]].concat());
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate-load"))
        .args(["--addr", &server.addr.to_string(), "--max-runtime", "60"])
        .args(["churn", "-c", "20", "--rounds", "1", "--warm-up", "0", "--reap-wait", "10", "--settle", "3"])
        .output()
        .expect("run pollgate-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    let result: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    let fatal = result["fatal"].as_str().unwrap_or_else(|| panic!("no fatal error in {result}"));
    assert!(fatal.starts_with("counting, ") && fatal.contains(" s into a burst of 20, "), "{fatal}");
    assert!(fatal.ends_with("send: status 411 Length Required"), "the counter's connector was reaped: {fatal}");
    // The counter waits a second between counts, longer than this server's timeout: the gap
    // it reports is that wait.
    let gap: f64 = fatal
        .split(" s after the last answer")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no gap in {fatal}"));
    assert!(gap >= 0.6, "{fatal}");
}

/// The tool refuses targets off this machine.
#[test]
fn refuses_non_loopback_targets() {
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate-load"))
        .args(["--addr", "192.0.2.1:8787", "echo", "-c", "1"])
        .output()
        .expect("run pollgate-load");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}
