//! Resilience: a panic in one request and file-descriptor exhaustion, against the real
//! server binary.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// The fault hook of the system plugin (test-only, off unless this variable is set).
const PANIC_ON_TOKEN: (&str, &str) = ("FAULT_INJECTION", "panic-on-token");

fn panic_token() -> String {
    json!({"ns": "org.jwebsocket.plugins.system", "type": "pollgate.test.panic", "utid": 7}).to_string()
}

/// Whether the process runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).unwrap_or("");
    !state.starts_with('Z') && !state.starts_with('X')
}

/// User plus system CPU time of a process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A panic in one request answers 500 with the defined body and harms nothing else: the
/// same and other connectors keep working, a poll held meanwhile gets its packet, a retried
/// idempotent send runs again (its claim was given back), the process lives on, and the log
/// has one error line per panic, without the connection id.
#[test]
fn a_panicking_request_answers_500_and_the_server_keeps_serving() {
    let mut env = NO_EVENTS.to_vec();
    env.push(PANIC_ON_TOKEN);
    let server = Server::start(&env);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");

    // b holds a poll through the panics.
    let holder = {
        let b = b.clone();
        std::thread::spawn(move || b.get("action=sync&wait=25000"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("pollgate_held_polls") < 1.0 {
        assert!(Instant::now() < deadline, "b's poll is not held");
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = a.post(&[("action", "send"), ("data", &panic_token())]);
    assert_eq!((r.status, r.text().as_str()), (500, "Internal server error!"));

    // An idempotent send that panics gives its claim back: its retry runs again (and
    // panics again) rather than answering 409 "in progress" for good. The claim is given
    // back by a task the panic spawns, so a retry right away may still find it running.
    let r = a.post(&[("action", "send"), ("seq", "1"), ("data", &panic_token())]);
    assert_eq!(r.status, 500, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let r = a.post(&[("action", "send"), ("seq", "1"), ("data", &panic_token())]);
        if r.status != 409 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(retried.status, 500, "{}", retried.text());
    let panics = 3;

    // The same connector works: an echo, and a send to b's held poll.
    let echo = a.system("echo", json!({"data": "still here"}));
    assert_eq!(echo["data"], "still here");
    let sent = a.system("send", json!({"targetId": b_id, "data": "after the panic"}));
    assert_eq!(sent["code"], 0, "{sent}");
    let held = holder.join().unwrap();
    assert_eq!(held.status, 200);
    assert!(held.text().contains("after the panic"), "{}", held.text());

    // Another connector, old and new, works; the process is alive.
    assert_eq!(b.system("echo", json!({"data": "b"}))["data"], "b");
    let c = server.client();
    c.open();
    assert_eq!(c.get("action=active").status, 204);
    assert!(alive(server.pid()));
    assert_eq!(server.metric("pollgate_panics_total"), panics as f64);

    // One error line per panic, with its location, and no secret anywhere.
    let log = server.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), panics, "{log}");
    for line in &errors {
        assert!(line.contains("request panicked") && line.contains("src/plugins/system.rs"), "{line}");
    }
    assert!(!log.contains("panicked at"), "the default panic hook printed: {log}");
    for secret in [&a.connection_id, &b.connection_id, &c.connection_id] {
        assert!(!log.contains(secret.as_str()), "a connection id was logged: {log}");
    }
}

/// Without the fault hook, the panicking token type is an unknown type like any other.
#[test]
fn the_fault_hook_is_off_by_default() {
    let server = Server::start(NO_EVENTS);
    let a = server.client();
    a.open();
    let r = a.post(&[("action", "send"), ("data", &panic_token())]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["msg"], "unknown type 'pollgate.test.panic'");
    assert_eq!(server.metric("pollgate_panics_total"), 0.0);
}

/// A `GET path` on a keep-alive connection; returns the status.
fn keep_alive_get(stream: &mut TcpStream, addr: SocketAddr, path: &str) -> u16 {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the kept connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return parse_response(&buf).status;
        }
    }
}

/// Out of file descriptors, the accept loop backs off (capped at a second) instead of
/// spinning or exiting, connections already open are still served, and once descriptors
/// are free again a new connection is served.
#[test]
fn descriptor_exhaustion_backs_off_and_recovers() {
    // Idle connections are not closed for lack of a request while the test looks.
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "120")]);
    let (pid, addr) = (server.pid(), server.addr);
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(keep_alive_get(&mut kept, addr, "/healthz"), 200);

    // 64 descriptors for the running server (it holds about 20 of them at rest).
    server.limit_descriptors(64);

    // Connect until the server fails to accept. Connections past its limit wait in the
    // kernel's backlog; this process holds at most a few hundred descriptors.
    let mut conns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("accept failed") {
        assert!(Instant::now() < deadline && conns.len() < 400, "no accept failed after {} connections", conns.len());
        for _ in 0..8 {
            conns.push(TcpStream::connect(addr).expect("connect (the backlog takes it)"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Exhausted: CPU over 3 s stays far below a busy core (a loose bound on a spin).
    let (ticks, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let cores = (cpu_ticks(pid) - ticks) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    assert!(cores < 0.3, "the server used {cores:.2} cores while out of descriptors");
    assert!(alive(pid), "the server exited");
    assert_eq!(keep_alive_get(&mut kept, addr, "/healthz"), 200, "an open connection is still served");

    let log = server.log();
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("accept failed; backing off"))
        .map(|l| {
            assert!(l.contains("Too many open files"), "{l}");
            let v = l.split("retry_in_ms=").nth(1).expect("retry_in_ms");
            v.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(waits.len() >= 3 && waits.windows(2).all(|w| w[1] >= w[0]), "back-off: {waits:?}");
    assert_eq!(waits.iter().max(), Some(&1000), "the wait grows to its cap of 1 s: {waits:?}");

    // Descriptors come back: a new connection is served, and the loop says it accepts again.
    drop(conns);
    let r = get(addr, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("accepting again") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = server.client();
    c.open();
    assert_eq!(c.get("action=active").status, 204);
}
