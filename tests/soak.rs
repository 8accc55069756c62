//! The soak of the test suite: a minute of connection churn, abandoned connections, held
//! long-polls and broadcasts (the load tool's `soak` mode) against the debug server, after
//! which the reaper must bring connectors and descriptors back to their start.
//! `scripts/soak.sh` is the ten-minute version, outside CI.

mod support;

use std::process::Command;

use support::{Server, NO_EVENTS};

/// After 50 s of churn (connections closed, abandoned, abandoned mid-poll), held long-polls
/// and broadcasts, the reaper brings the live connectors back to 0 and the server's open
/// descriptors back to their start, give or take 2.
#[test]
fn connectors_and_descriptors_return_to_their_start_after_the_reaper() {
    // A 6 s session timeout: abandoned connectors are reaped within about 7 s (a reaper pass
    // every second), held polls last at most 3 s (half the timeout). Events off: with them,
    // every open and close would wake every poll, and polls would not be held.
    let mut env = NO_EVENTS.to_vec();
    env.push(("TIMEOUT", "0.1"));
    let server = Server::start(&env);
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate-load"))
        .args(["--addr", &server.addr.to_string(), "--pid", &server.pid().to_string()])
        .args(["--duration", "50", "--wait-ms", "3000", "--req-timeout", "30", "--max-runtime", "200"])
        .args(["soak", "--pollers", "20", "--churners", "2", "--churn-pause-ms", "50", "--interval", "10"])
        // Descriptors: the slack allows for descriptors a server opens once and keeps, not per
        // connection (a Redis store's connection re-dialled, say); a leak grows with the
        // thousands of connections of the run and shows far above it.
        .args(["--reap-wait", "90", "--fd-slack", "2"])
        .output()
        .expect("run pollgate-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    let result: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    let num = |key: &str| result[key].as_u64().unwrap_or_else(|| panic!("no {key} in {result}"));

    // The load flowed: every kind of connection ending, polls answered, broadcasts delivered.
    for key in ["closed", "abandoned", "abandoned_polling", "recycled", "polls", "packets", "broadcasts"] {
        assert!(num(key) > 0, "no {key}: {result}");
    }
    // Errors are not what this test is about; a few (a request slow on a loaded machine)
    // are allowed, a broken load is not.
    assert!(num("errors") * 100 <= num("polls") + num("closed") + num("abandoned"), "errors: {result}");

    assert_eq!(num("connectors_start"), 0, "{result}");
    assert_eq!(num("connectors_end"), 0, "connectors left after the reaper: {result}");
    assert!(num("fds_end") <= num("fds_start") + 2, "descriptors left after the reaper: {result}");
    assert_eq!(result["returned"], true, "{result}");
    assert!(out.status.success(), "pollgate-load failed: {stdout}");
}
