//! Resilience against the real server binary: no test hook makes it panic, and
//! file-descriptor exhaustion. (A panic in one request: tests/panics.rs.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

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

/// The shipped server has no test hook that makes a request panic: the token type an earlier
/// fault hook panicked on is an unknown type like any other (a panicking request is tested
/// in-process, with a plugin of the test's own: tests/panics.rs).
#[test]
fn no_token_makes_the_shipped_server_panic() {
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
