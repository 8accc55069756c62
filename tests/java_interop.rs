//! Java interop: the programs in `tests/java/` (a jWebSocket `JWebSocketHTTPClient`-style client
//! over `HttpURLConnection`, and a `java.net.http` client using pollgate's extensions) run
//! against the real server. Needs Java 17's `javac` and `java`, which the test command installs.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Compiles `tests/java/{main}.java`, with the JSON reader both programs share
/// (`tests/java/Json.java`), into a fresh folder and runs it with `arg`; returns its
/// standard output after asserting that it exited 0.
fn run_java(main: &str, arg: &str) -> String {
    let classes = tempfile::tempdir().expect("tempdir");
    let source = repo().join("tests/java").join(format!("{main}.java"));
    let javac = tool("javac")
        .arg("-encoding")
        .arg("UTF-8")
        .arg("-d")
        .arg(classes.path())
        .arg(&source)
        .arg(repo().join("tests/java/Json.java"))
        .output()
        .unwrap_or_else(|e| missing("javac", e));
    assert!(javac.status.success(), "javac {}:\n{}", source.display(), String::from_utf8_lossy(&javac.stderr));
    let run =
        tool("java").arg("-cp").arg(classes.path()).arg(main).arg(arg).output().unwrap_or_else(|e| missing("java", e));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "java {main} exited with {}\n--- stdout\n{stdout}--- stderr\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// `javac`/`java` from `JAVA_HOME` when it is set, else from `PATH`.
fn tool(name: &str) -> Command {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin").join(name).exists() => {
            Command::new(Path::new(&home).join("bin").join(name))
        }
        _ => Command::new(name),
    }
}

fn missing(name: &str, e: std::io::Error) -> ! {
    panic!(
        "cannot run `{name}` ({e}): the Java interop tests need a JDK 17 (javac and java); \
         run the README's test command, ./scripts/test.sh, which installs openjdk-17-jdk-headless"
    )
}

/// Asserts that every line of `expected` occurs in `stdout`, in that order.
fn assert_lines_in_order(stdout: &str, expected: &[&str]) {
    let mut lines = stdout.lines();
    for want in expected {
        assert!(lines.any(|l| l.starts_with(want)), "missing or out of order: {want:?}\n--- stdout\n{stdout}");
    }
}

/// A jWebSocket-style Java client (GET, raw JSON in the query) goes through open, sync, login,
/// echo, send to itself, getClients, logout, close and a server-side close with the bodies
/// jWebSocket sends.
#[test]
fn jwebsocket_style_java_client() {
    let server = Server::start(NO_EVENTS);
    let out = run_java("JwsHttpClient", &format!("http://{}{ENDPOINT}", server.addr));
    assert_lines_in_order(
        &out,
        &[
            "ok open: maxFrameSize info message",
            "ok sync: welcome, sourceId ",
            "ok login: guest, ",
            "ok echo: REST: {\"quoted\"} <é€>",
            "ok send to itself",
            "ok sync: the queued send response",
            "ok getClients: [guest@",
            "ok logout",
            "ok close: http.command.close",
            "ok after close: sync [], send 400 Invalid connection state!",
            "ok open again with the same connectionId: same sourceId",
            "ok close token: sync [\"http.command.close\"]",
            "PASS",
        ],
    );
}

/// A `java.net.http` client with the extensions: header id, POST forms, acknowledged
/// long-poll, a held poll woken by a second connector, idempotent send, a held poll woken by
/// a close, and a close re-served until acknowledged.
#[test]
fn java_net_http_client_with_extensions() {
    let server = Server::start(NO_EVENTS);
    let out = run_java("PollgateHttpClient", &server.addr.to_string());
    assert_lines_in_order(
        &out,
        &[
            "ok A open",
            "ok A acknowledged sync",
            "ok A login (POST form) and whoami: guest",
            "ok B open",
            "ok B long-poll woken by A's send",
            "ok A idempotent send: seq=1 sent 3 times, B got [once, second]",
            "ok A logout, close: http.command.close, then sync [] and POST 411",
            "ok B long-poll woken by its close token: [\"http.command.close\"], reason client",
            "ok B close re-served until acknowledged, then []",
            "PASS",
        ],
    );
}
