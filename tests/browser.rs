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

use support::{repo, Client, Server, NO_EVENTS};

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
    // Shown with --nocapture: what the scenario did.
    eprint!("--- {name}\n{out}{errors}");
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

/// Behind a proxy that loses every fifth response (after the server processed the request),
/// 200 messages each way between two sockets arrive exactly once and in order.
#[test]
fn lossy_proxy_loses_nothing_and_keeps_order() {
    let server = Server::start(&[]);
    let out = scenario("lossy", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}

/// A server restarted under an open page (same port, no state): the socket closes with code
/// 4000, `wasClean` false and a reason; a server gone for good: `error`, then 1006.
#[test]
fn server_restart_and_loss_close_the_socket_with_a_reason() {
    // The memory store: a restarted server has no state, in the Redis pass too.
    let mut server = Server::start(&[("STORE", "memory")]);
    let addr = server.addr;
    let port = addr.port().to_string();
    let out = scenario("restart", addr, &mut |what| match what {
        "restart" => {
            server.kill();
            server = Server::start(&[("STORE", "memory"), ("PORT", &port)]);
            assert_eq!(server.addr, addr, "restarted on the same port");
            "restarted".into()
        }
        "kill" => {
            server.kill();
            "killed".into()
        }
        other => panic!("unexpected control request {other}"),
    });
    assert!(out.contains("scenario passed"), "{out}");
}

/// A screenshot of the demo page in use is kept as `target/test-artifacts/demo.png`.
#[test]
fn demo_page_screenshot_is_kept() {
    let server = Server::start(&[]);
    let file = artifacts().join("demo.png");
    let _ = std::fs::remove_file(&file);
    let out = scenario("screenshot", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
    let png = std::fs::read(&file).expect("demo.png was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(png.len() > 10_000, "a real screenshot, not an empty image: {} bytes", png.len());
}

/// The WebSocket interface: install() as `window.WebSocket`, a ws:// URL mapped to the
/// endpoint, states, errors, events, bufferedAmount, clean closes by either side, and every
/// request a POST with the connection id in its header only.
#[test]
fn websocket_interface_and_wire_format() {
    let server = Server::start(&[]);
    let out = scenario("api", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}

/// The admin page: counters from the metrics, a wrong token refused, the sessions table
/// paged and filtered, a session closed from its row (its client gets the close); a
/// screenshot is kept as `target/test-artifacts/admin.png`.
#[test]
fn admin_page_lists_filters_pages_and_closes_sessions() {
    let mut env = vec![("ADMIN_TOKEN", "admin-token-for-browser-tests")];
    env.extend_from_slice(NO_EVENTS);
    let server = Server::start(&env);
    let guest = server.client();
    guest.open();
    guest.login("guest", "guest");
    let others: Vec<Client> = (0..11).map(|_| server.client()).collect();
    for c in &others {
        c.open();
    }
    let file = artifacts().join("admin.png");
    let _ = std::fs::remove_file(&file);
    let out = scenario("admin", server.addr, &mut |what| match what {
        "closed?" => {
            let r = guest.sync();
            format!("{} {}", r.packets().join(","), r.header("x-pollgate-close-reason").unwrap_or(""))
        }
        other => panic!("unexpected control request {other}"),
    });
    assert!(out.contains("scenario passed"), "{out}");
    let png = std::fs::read(&file).expect("admin.png was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
}

/// Ten tabs of one origin chat through the demo page while one poll, held by a SharedWorker,
/// waits for them all (the metrics show one held poll): every tab receives every message
/// once and in order; a tab closed and a tab crashed close only their own connectors.
#[test]
fn ten_tabs_share_one_poll() {
    let server = Server::start(&[]);
    let out = scenario("tabs", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}

/// Without SharedWorker the tabs elect a leader with Web Locks; in the middle of a stream of
/// messages the leader's tab is closed, then the next leader's tab crashes: each time another
/// takes the poll over, and nothing is lost or doubled.
#[test]
fn the_leader_tab_hands_the_poll_over_without_loss() {
    let server = Server::start(&[]);
    let out = scenario("takeover", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}

/// Two origins of one server in one browser: each origin's tabs share a poll of their own
/// (two held polls), and a socket is handed only its own connector's packets.
#[test]
fn origins_do_not_share_a_poll() {
    let server = Server::start(&[]);
    let out = scenario("origins", server.addr, &mut no_control);
    assert!(out.contains("scenario passed"), "{out}");
}
