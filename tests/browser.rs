//! The browser client (`static/pollgate.js`) and the demo page (`static/index.html`) in real
//! headless Chromium: each test starts the server and runs one scenario of `tests/browser/`
//! (Node with playwright-core, installed by `npm ci` in that folder), and fails loudly, with
//! node's output, when node, Chromium or the Node modules are missing.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{repo, Server};

/// The longest one scenario may run before it is killed (each also limits itself).
const LIMIT: Duration = Duration::from_secs(120);
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where scenarios keep what they produce (the demo screenshot).
fn artifacts() -> PathBuf {
    let dir = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

fn check_prerequisites() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests need Debian's chromium (apt-get install -y chromium)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: the browser tests need Node.js (apt-get install -y nodejs npm): {node:?}"
    );
    assert!(
        repo().join("tests/browser/node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser first"
    );
}

/// Runs `node tests/browser/{name}.mjs` against the server at `addr`, answers each
/// `CONTROL <what>` line it prints with `control(what)` (one line on its stdin), and returns
/// its stdout. Panics with node's stdout and stderr if it fails or outlives [`LIMIT`].
fn scenario(name: &str, addr: SocketAddr, control: &mut dyn FnMut(&str) -> String) -> String {
    check_prerequisites();
    let dir = repo().join("tests/browser");
    let mut child = Command::new("node")
        .arg(dir.join(format!("{name}.mjs")))
        .current_dir(&dir)
        .env("POLLGATE_TEST_ADDR", addr.to_string())
        .env("POLLGATE_TEST_ARTIFACTS", artifacts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // A watchdog: node is killed if it runs past the limit (its stdout then ends).
    let (finished, watchdog) = mpsc::channel::<()>();
    let pid = child.id();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(LIMIT) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        out.push_str(&line);
        out.push('\n');
        if let Some(what) = line.strip_prefix("CONTROL ") {
            let answer = control(what);
            writeln!(stdin, "{answer}").expect("answer the scenario");
        }
    }
    let status = child.wait().expect("wait for node");
    let _ = finished.send(());
    let errors = errors.join().unwrap_or_default();
    assert!(status.success(), "browser scenario {name} failed ({status}):\n--- stdout\n{out}--- stderr\n{errors}");
    out
}

fn no_control(what: &str) -> String {
    panic!("unexpected control request {what}")
}

/// Two pages chat through the demo page: each sees the other online, a broadcast and a
/// direct message arrive and end "delivered", and a closed page leaves the online list.
#[test]
fn demo_chat_between_two_pages() {
    let server = Server::start(&[]);
    let out = scenario("chat", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}
