//! Hostile clients (issue 7): slow senders, floods, huge and deeply nested bodies, guessed and
//! replayed connection ids, racing syncs and sends, password guessing, clients that never
//! read. Each gets a defined answer, and the server keeps serving everyone else.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const OPEN_BODY: &str =
    r#"{"ns":"org.jwebsocket.msgctrl","type":"info","name":"maxFrameSize","data":1048840,"jwsWrappedMsg":true}"#;
const INVALID_STATE: &str = "Invalid connection state!";
const ADMIN_TOKEN: &str = "hostile-test-admin-token";

/// A value of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The state (`/proc/net/tcp`, 1 = established) of the server's end of the connection
/// between `server_port` and the client port `peer_port`, if the kernel still has it.
fn server_end_state(server_port: u16, peer_port: u16) -> Option<u8> {
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ours = port(f.get(1)?)? == server_port && port(f.get(2)?)? == peer_port;
        ours.then(|| u8::from_str_radix(f.get(3)?, 16).ok()).flatten()
    })
}

/// Whether the server process holds a file whose path ends with `path_end`.
fn server_holds_file(pid: u32, path_end: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).any(|t| t.to_string_lossy().ends_with(path_end))
}

/// Reads until the peer closes (EOF or reset) or `limit` passes; returns what came and
/// whether the peer closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Writes `bytes` one at a time, `gap` apart, until the server answers or closes; returns
/// what the server sent, whether it closed, how long it took and how many bytes went out.
fn trickle(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> (Vec<u8>, bool, Duration, usize) {
    s.set_read_timeout(Some(gap)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for (sent, b) in bytes.iter().enumerate() {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return (got, true, start.elapsed(), sent);
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, true, start.elapsed(), sent + 1),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // The answer came; the server closes right after it.
                let (rest, closed) = read_until_closed(s, Duration::from_secs(5));
                got.extend_from_slice(&rest);
                return (got, closed, start.elapsed(), sent + 1);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true, start.elapsed(), sent + 1),
        }
    }
    (got, false, start.elapsed(), bytes.len())
}

/// Waits until the server has closed its end of the connection from `client` (the kernel
/// may keep it a while to send what is buffered, but no longer as established); returns the
/// time since `since` and the highest server RSS seen meanwhile (kB).
fn wait_for_close(pid: u32, server: SocketAddr, client: &TcpStream, since: Instant) -> (Duration, u64) {
    let peer_port = client.local_addr().unwrap().port();
    let (mut peak_rss, mut seen) = (0, false);
    loop {
        peak_rss = peak_rss.max(proc_kb(pid, "VmRSS"));
        match server_end_state(server.port(), peer_port) {
            Some(1) => seen = true,
            None if !seen => {}
            _ => return (since.elapsed(), peak_rss),
        }
        assert!(since.elapsed() < Duration::from_secs(20), "the connection is still held");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A socket with a tiny receive window, so that a response the client does not read fills
/// the kernel's buffers at once and the server's writes wait.
fn connect_with_small_window(addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(addr).await.expect("connect")
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// A body trickled a byte at a time (declared or chunked) gets 408 at `body_read_timeout`:
/// the deadline is for the whole body, so bytes that keep coming do not extend it.
#[test]
fn a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_body_deadline() {
    let server = Server::start(&[("BODY_READ_TIMEOUT", "1")]);
    let c = server.client();
    c.open();
    let body = format!("connectionId={}&action=send&data={}", c.connection_id, "x".repeat(400));
    let declared = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let chunked = format!(
        "POST {ENDPOINT}?connectionId={}&action=send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        c.connection_id
    );
    let chunked_body: String = "x".repeat(400).chars().map(|ch| format!("1\r\n{ch}\r\n")).collect();
    for (head, body) in [(declared, body), (chunked, chunked_body)] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        // 400 bytes at 25 ms: 10 s if the server waited for them all.
        let (got, closed, elapsed, sent) = trickle(&mut s, body.as_bytes(), Duration::from_millis(25));
        assert!(sent < body.len(), "the whole body went through ({elapsed:?})");
        assert!(elapsed >= Duration::from_millis(800), "cut before the deadline: {elapsed:?}");
        let r = parse_response(&got);
        assert_eq!((r.status, r.text().as_str()), (408, "Request body not received in time!"));
        assert!(closed, "the connection is closed after the 408");
    }
    // Nothing of either body was run, and the server still serves.
    assert_eq!(c.sync().text(), "[]");
    let echo = json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "after"});
    assert_eq!(c.send(&echo).json()["data"], "after");
}

/// Headers trickled a byte at a time are cut off at `header_read_timeout` on a kept-alive
/// connection too (after a first, complete request), and an idle kept-alive connection is
/// closed after the same time.
#[test]
fn headers_trickled_on_a_kept_alive_connection_are_cut_off() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1")]);
    let first = format!("GET {ENDPOINT}?connectionId=abc&action=sync HTTP/1.1\r\nHost: x\r\n\r\n");
    let next = format!(
        "GET {ENDPOINT}?connectionId=abc&action=sync HTTP/1.1\r\nHost: x\r\n{}\r\n\r\n",
        "X-Slow: y\r\n".repeat(40)
    );
    for trickle_next in [true, false] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(first.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let r = parse_response(&buf[..n]);
        assert_eq!((r.status, r.text().as_str()), (200, "[]"), "the first request is served");
        if trickle_next {
            // ~500 bytes at 20 ms: 10 s if each byte restarted the clock.
            let (got, closed, elapsed, sent) = trickle(&mut s, next.as_bytes(), Duration::from_millis(20));
            assert!(closed && sent < next.len(), "still connected after {elapsed:?}");
            assert!(elapsed >= Duration::from_millis(800), "cut before the deadline: {elapsed:?}");
            if !got.is_empty() {
                assert_eq!(parse_response(&got).status, 408, "{}", String::from_utf8_lossy(&got));
            }
        } else {
            let start = Instant::now();
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(20));
            assert!(closed, "an idle kept-alive connection stays open");
            assert!(start.elapsed() >= Duration::from_millis(800), "{:?}", start.elapsed());
        }
    }
    assert_eq!(server.client().sync().text(), "[]", "the server still serves");
}

/// A poll held longer than `header_read_timeout` is not cut by it: the connection's one timer,
/// lent to the poll's wait, was last set for the head's deadline, and goes off there first.
/// The poll answers at the end of its wait, and the connection serves its next request and is
/// closed when it idles, as before.
#[test]
fn a_poll_held_past_the_header_deadline_is_answered_and_the_connection_serves_on() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1")]);
    let c = server.client();
    c.open();
    c.sync();
    assert_eq!(c.sync().text(), "[]", "nothing queued");
    let sync = |wait: u64| {
        format!("GET {ENDPOINT}?connectionId={}&action=sync&wait={wait} HTTP/1.1\r\nHost: x\r\n\r\n", c.connection_id)
    };
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    s.write_all(sync(2500).as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    let held = start.elapsed();
    let r = parse_response(&buf[..n]);
    assert_eq!((r.status, r.text().as_str()), (200, "[]"), "the held poll's answer");
    assert!(held >= Duration::from_millis(2400), "answered before its wait ended: {held:?}");
    s.write_all(sync(0).as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    let r = parse_response(&buf[..n]);
    assert_eq!((r.status, r.text().as_str()), (200, "[]"), "the next request on the connection");
    let idle = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed, "an idle kept-alive connection stays open");
    assert!(idle.elapsed() >= Duration::from_millis(800), "{:?}", idle.elapsed());
}

/// The admin API's `PUT sessions/{id}/data` has the same whole-body deadline: a trickled body
/// gets 408 with a JSON error.
#[test]
fn a_trickled_admin_body_gets_408() {
    let server = Server::start(&[("BODY_READ_TIMEOUT", "1"), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let body = format!("{{\"k\":\"{}\"}}", "v".repeat(400));
    let head = format!(
        "PUT /jWebSocket/admin/sessions/x/data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let (got, _, elapsed, sent) = trickle(&mut s, body.as_bytes(), Duration::from_millis(25));
    assert!(sent < body.len(), "the whole body went through ({elapsed:?})");
    let r = parse_response(&got);
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json(), json!({"error": "the body was not received in time"}));
}

/// Opens one connector per attempt from `threads` threads at once; returns every answer.
fn flood_opens(server: &Server, threads: usize, per_thread: usize) -> Vec<(Client, Response)> {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (addr, answers) = (server.addr, answers.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let c = Client::new(addr);
                    let r = c.get("action=open");
                    answers.lock().unwrap().push((c, r));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    Arc::try_unwrap(answers).ok().unwrap().into_inner().unwrap()
}

/// A flood of 300 opens from 30 connections at once against `maxconnections = 20`
/// (`reject`): exactly 20 are admitted, every other gets 503 `Too many connections!`, and the
/// server keeps serving the admitted ones.
#[test]
fn a_flood_of_opens_beyond_maxconnections_is_rejected_exactly_at_the_limit() {
    let server = Server::start(&[("MAXCONNECTIONS", "20")]);
    let answers = flood_opens(&server, 30, 10);
    let mut admitted = Vec::new();
    for (c, r) in answers {
        match (r.status, r.text().as_str()) {
            (200, OPEN_BODY) => admitted.push(c),
            (503, "Too many connections!") => {}
            other => panic!("undefined answer to an open: {other:?}"),
        }
    }
    assert_eq!(admitted.len(), 20, "admitted beyond (or below) the limit");
    assert_eq!(server.metric("pollgate_connectors"), 20.0);
    for c in &admitted {
        let packets = c.sync().packets();
        assert!(packets[0].contains(r#""type":"welcome""#), "{packets:?}");
    }
    // A close makes room for exactly one more.
    assert_eq!(admitted[0].get("action=close").text(), "http.command.close");
    assert_eq!(server.client().get("action=open").status, 200);
    assert_eq!(server.client().get("action=open").status, 503);
    assert_eq!(server.metric("pollgate_connectors"), 20.0);
}

/// The same flood with `onmaxconnections = close`: every answer is 200 or 503, the number of
/// connectors never exceeds the limit, and the evicted ones are told so.
#[test]
fn a_flood_of_opens_with_eviction_never_exceeds_the_limit() {
    let server = Server::start(&[("MAXCONNECTIONS", "20"), ("ONMAXCONNECTIONS", "close")]);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, peak, addr) = (stop.clone(), peak.clone(), server.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = get(addr, "/jWebSocket/metrics").text();
                if let Some(n) = text.lines().find_map(|l| l.strip_prefix("pollgate_connectors ")?.parse::<f64>().ok())
                {
                    peak.fetch_max(n as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let answers = flood_opens(&server, 30, 10);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let mut opened = 0;
    for (_, r) in &answers {
        match (r.status, r.text().as_str()) {
            (200, OPEN_BODY) => opened += 1,
            (503, "Too many connections!") => {}
            other => panic!("undefined answer to an open: {other:?}"),
        }
    }
    assert!(opened >= 20, "eviction admits new clients: only {opened} of 300");
    assert!(peak.load(Ordering::Relaxed) <= 20, "{} connectors seen", peak.load(Ordering::Relaxed));
    // Racing opens may evict one connector each and still lose the freed place to another
    // open (then answering 503 after a few tries): the count may end below the limit.
    let count = server.metric("pollgate_connectors") as usize;
    assert!((1..=20).contains(&count), "{count} connectors");
    // Every admitted client is either still live or holds its eviction notice.
    let (mut live, mut evicted) = (0, 0);
    for (c, r) in &answers {
        if r.status != 200 {
            continue;
        }
        let s = c.sync();
        let packets = s.packets();
        if packets.last().map(String::as_str) == Some("http.command.close") {
            assert_eq!(s.header("x-pollgate-close-reason"), Some("evicted"));
            evicted += 1;
        } else {
            live += 1;
        }
    }
    assert_eq!((live, evicted), (count, opened - count));
}

/// A real 100 MB body, declared or chunked, is answered 413 after at most `maxframesize`
/// bytes: the server answers and closes before the client is done, and its memory stays far
/// below the body's size.
#[test]
fn a_100_mb_body_is_refused_early_without_being_buffered() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let server = Server::start(&[]);
    let pid = server.pid();
    let c = server.client();
    c.open();
    let heads = [
        format!(
            "POST {ENDPOINT}?connectionId={}&action=send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Content-Length: {TOTAL}\r\n\r\n",
            c.connection_id
        ),
        format!(
            "POST {ENDPOINT}?connectionId={}&action=send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            c.connection_id
        ),
    ];
    for (i, head) in heads.iter().enumerate() {
        let chunked = i == 1;
        let mut s = TcpStream::connect(server.addr).unwrap();
        // A server that neither reads nor closes fails the test instead of hanging it.
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let answer = std::thread::spawn(move || read_until_closed(&mut reader, Duration::from_secs(60)));
        s.write_all(head.as_bytes()).unwrap();
        let piece = vec![b'x'; 64 * 1024];
        let frame = if chunked {
            [format!("{:x}\r\n", piece.len()).into_bytes(), piece.clone(), b"\r\n".to_vec()].concat()
        } else {
            piece.clone()
        };
        let (mut sent, mut peak_rss) = (0usize, 0u64);
        while sent < TOTAL {
            if s.write_all(&frame).is_err() {
                break;
            }
            sent += piece.len();
            if (sent / piece.len()).is_multiple_of(16) {
                peak_rss = peak_rss.max(proc_kb(pid, "VmRSS"));
            }
        }
        let (got, closed) = answer.join().unwrap();
        assert!(sent < TOTAL, "the server took all 100 MB (chunked: {chunked})");
        assert!(closed, "the connection stayed open (chunked: {chunked})");
        let r = parse_response(&got);
        assert_eq!((r.status, r.text().as_str()), (413, "Request too large: the limit is 1048840 bytes!"));
        assert!(peak_rss < 64 * 1024, "server RSS reached {peak_rss} kB (chunked: {chunked})");
    }
    assert_eq!(c.sync().text(), "[]", "nothing was run");
}

/// 100,000 nested `[` (or `{"a":`), alone or inside a token, hit serde_json's recursion
/// limit: the data is not JSON, so the answer is the empty 200 of docs/PROTOCOL.md; no stack
/// overflow, and a token nested 100 deep still works. The admin API answers 400.
#[test]
fn deeply_nested_json_gets_a_defined_answer() {
    let server = Server::start(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let c = server.client();
    c.open();
    let deep = 100_000;
    let echo = |data: &str| format!(r#"{{"ns":"org.jwebsocket.plugins.system","type":"echo","data":{data}}}"#);
    let arrays = "[".repeat(deep);
    let closed_arrays = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(deep), "}".repeat(deep));
    let send_raw = |data: &str| {
        let target = format!("{ENDPOINT}?connectionId={}&action=send", c.connection_id);
        post(server.addr, &target, "text/plain", data.as_bytes())
    };
    for data in [arrays.clone(), closed_arrays.clone(), objects.clone(), echo(&closed_arrays), echo(&objects)] {
        let r = send_raw(&data);
        assert_eq!((r.status, r.text().as_str()), (200, ""), "{}...", &data[..40]);
    }
    // The same in a form body, and raw in a GET query (64 KiB of them: a longer request
    // target gets 414, see below).
    let r = c.post(&[("action", "send"), ("data", &echo(&closed_arrays))]);
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    let r = c.get(&format!("action=send&data={}", echo(&arrays[..60_000])));
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    // Nesting within the limit is parsed: echo answers its token-level error (its data must
    // be a string), where the over-deep token got no answer at all.
    let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let r = send_raw(&echo(&fine));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["msg"], "missing 'data' argument for 'echo' command");
    // The admin API parses JSON bodies too.
    let body = format!("{{\"k\":{closed_arrays}}}");
    let req = format!(
        "PUT /jWebSocket/admin/sessions/x/data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = raw(server.addr, req.as_bytes());
    assert_eq!((r.status, r.json()), (400, json!({"error": "the body must be a JSON object"})));
    // Still serving, nothing crashed.
    let r = c.send(&json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "alive"}));
    assert_eq!(r.json()["data"], "alive");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Every request of the protocol with connection id `id`, sent from `source`; the answers
/// (status, body, `X-Pollgate-Seq`) in order.
fn every_action(server: &Server, source: IpAddr, id: &str) -> Vec<(u16, String, Option<String>)> {
    let mut requests: Vec<Vec<u8>> = [
        "action=sync",
        "action=sync&wait=200",
        "action=sync&ack=1",
        "action=send&data={\"ns\":\"org.jwebsocket.plugins.system\",\"type\":\"echo\",\"data\":\"x\"}",
        "action=send&seq=1&data=x",
        "action=login&username=guest&password=guest",
        "action=logout",
        "action=whoami",
        "action=active",
        "action=download&filename=a.txt&alias=publicDir",
        "action=nonsense",
        "action=close",
    ]
    .iter()
    .map(|q| {
        format!("GET {ENDPOINT}?connectionId={id}&{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    })
    .collect();
    let form = "action=send&data=x";
    requests.push(
        format!(
            "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nX-Pollgate-Connection: {id}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )
        .into_bytes(),
    );
    requests.push(
        format!(
            "GET /jWebSocket/admin/connectors HTTP/1.1\r\nHost: x\r\nX-Pollgate-Connection: {id}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    );
    requests
        .iter()
        .map(|req| {
            let r = raw_from(source, server.addr, req);
            (r.status, r.text(), r.header("x-pollgate-seq").map(str::to_owned))
        })
        .collect()
}

/// A replayed connection id from another address (127.0.0.2) reaches nothing of the
/// connector it belongs to: every action answers exactly as for a random id never opened (no
/// information leaks), and the owner's login, queue and connector are untouched. The
/// owner's public `sourceId` used as a connection id reaches nothing either.
#[test]
fn guessed_and_replayed_connection_ids_reach_nothing_and_learn_nothing() {
    let server = Server::start(&NO_EVENTS.iter().copied().chain([("ADMIN_TOKEN", ADMIN_TOKEN)]).collect::<Vec<_>>());
    write(&server.fs_root().join("public/a.txt"), b"public file");
    let victim = server.client();
    let victim_id = victim.open();
    assert_eq!(victim.login("root", "root")["code"], 0);
    let (other, local): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
    // A packet waits in the victim's queue.
    let peer = server.client();
    peer.open();
    peer.login("guest", "guest");
    let note =
        json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": victim_id, "data": "for the victim"});
    assert_eq!(peer.send(&note).status, 200);

    let guessed = format!("{:032x}", rand::random::<u128>());
    let guess = every_action(&server, local, &guessed);
    let replay = every_action(&server, other, &victim.connection_id);
    let by_source_id = every_action(&server, local, &victim_id);
    assert_eq!(replay, guess, "a replay from another address answers as a guess");
    assert_eq!(by_source_id, guess, "the public sourceId is no connection id");
    // The defined answers to an unknown connection.
    let statuses: Vec<(u16, &str)> = guess.iter().map(|(s, b, _)| (*s, b.as_str())).collect();
    assert_eq!(statuses[..3], [(200, "[]"), (200, "[]"), (200, "[]")]);
    for (status, body) in &statuses[3..12] {
        assert_eq!((*status, *body), (400, INVALID_STATE));
    }
    assert_eq!(statuses[12], (411, INVALID_STATE), "POST to an unknown connector");
    assert_eq!(statuses[13], (401, r#"{"error":"unauthorized"}"#), "admin API");
    // The victim is untouched: still root, its packet still queued, its connector live.
    assert_eq!(victim.get("action=whoami").json()["username"], "root");
    let packets = victim.sync().packets();
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert!(packets[0].contains("for the victim"), "{packets:?}");
    assert_eq!(victim.get("action=active").status, 204);
    assert!(!server.log().contains(&victim.connection_id), "the connection id was logged");
}

/// 20 parallel long-polls and 200 parallel sends with `seq` on one connector: every send runs
/// exactly once (also the ones that arrive after a higher `seq`), every packet is delivered
/// exactly once across the polls, a superseded poll answers `[]`, and retries run nothing.
#[test]
fn concurrent_syncs_and_sends_on_one_connector_lose_and_repeat_nothing() {
    const SENDS: u64 = 200;
    let server = Server::start(&NO_EVENTS.iter().copied().chain([("MAX_SYNC_WAIT", "20000")]).collect::<Vec<_>>());
    let (c, peer) = (server.client(), server.client());
    let id = c.open();
    assert_eq!(c.login("guest", "guest")["code"], 0);
    peer.open();
    assert_eq!(peer.login("guest", "guest")["code"], 0);

    // 20 polls at once on an empty queue: each newer one supersedes the held one, which
    // answers [] at once; the last one gets the first packet queued.
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || (Instant::now(), c.get("action=sync&wait=20000")))
        })
        .collect();
    let wake = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": id, "data": "wake", "responseRequested": false});
    // Wait until 19 were superseded (the server counts the held one).
    let start = Instant::now();
    while polls.iter().filter(|p| p.is_finished()).count() < 19 {
        assert!(start.elapsed() < Duration::from_secs(15), "superseded polls were not answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = peer.post(&[("action", "send"), ("data", &wake.to_string())]);
    assert_eq!(r.status, 200);
    let mut delivered = Vec::new();
    for p in polls {
        let (_, r) = p.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        delivered.extend(r.packets());
    }
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].contains(r#""data":"wake""#), "{delivered:?}");

    // 200 sends with seq 1..=200 from 10 threads, while 20 threads keep polling. Each send
    // forwards to the connector itself: its body is the forwarded token, and its response
    // (utid = seq) is queued.
    let next_seq = Arc::new(AtomicU64::new(1));
    let sends_done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let empty_polls = Arc::new(AtomicUsize::new(0));
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let (c, done, received, empty) = (c.clone(), sends_done.clone(), received.clone(), empty_polls.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    let r = c.get("action=sync&wait=1000");
                    assert_eq!(r.status, 200, "{}", r.text());
                    let packets = r.packets();
                    if packets.is_empty() {
                        empty.fetch_add(1, Ordering::Relaxed);
                    }
                    received.lock().unwrap().extend(packets);
                }
            })
        })
        .collect();
    let senders: Vec<_> = (0..10)
        .map(|_| {
            let (c, next_seq, id) = (c.clone(), next_seq.clone(), id.clone());
            std::thread::spawn(move || loop {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                if seq > SENDS {
                    return;
                }
                let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": id,
                    "data": format!("p{seq}"), "utid": seq});
                let r = c.post(&[("action", "send"), ("seq", &seq.to_string()), ("data", &token.to_string())]);
                assert_eq!(r.status, 200, "send {seq}: {}", r.text());
                assert_eq!(r.json()["data"], format!("p{seq}"), "send {seq}: its body");
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    sends_done.store(true, Ordering::Relaxed);
    for p in pollers {
        p.join().unwrap();
    }
    // Retries of every seq run nothing again: the kept responses are replayed, older ones 409.
    for seq in 1..=SENDS {
        let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": id,
            "data": format!("p{seq}"), "utid": seq});
        let r = c.post(&[("action", "send"), ("seq", &seq.to_string()), ("data", &token.to_string())]);
        match r.status {
            200 => assert_eq!(r.json()["data"], format!("p{seq}")),
            409 => assert_eq!(r.text(), "A send with this 'seq' was processed; its response is no longer kept!"),
            other => panic!("retry of {seq}: {other} {}", r.text()),
        }
    }
    let mut received = Arc::try_unwrap(received).unwrap().into_inner().unwrap();
    loop {
        let more = c.sync().packets();
        if more.is_empty() {
            break;
        }
        received.extend(more);
    }
    let mut utids: Vec<u64> = received
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(p).unwrap_or_else(|_| panic!("not a token: {p}"));
            assert_eq!((v["type"].as_str(), v["reqType"].as_str()), (Some("response"), Some("send")), "{p}");
            v["utid"].as_u64().unwrap()
        })
        .collect();
    utids.sort_unstable();
    assert_eq!(utids, (1..=SENDS).collect::<Vec<_>>(), "each response exactly once");
}

/// Password guessing: after `login_max_failures` wrong passwords for a user name, every
/// login of that name answers `Too many failed logins, retry in N seconds` from any connector
/// and by either login path (the lockout is per name, as designed: the right password waits
/// too), other users are unaffected, and the name logs in again once the window has passed.
#[test]
fn password_guessing_is_locked_out_per_user_name() {
    let server =
        Server::start(&[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_WINDOW", "2"), ("BROADCAST_LOGIN_EVENT", "false")]);
    let fresh = || {
        let c = server.client();
        c.open();
        c
    };
    let msg = |v: &Value| v["msg"].as_str().unwrap_or("").to_owned();
    // A guesser that opens a new connector per guess, so the per-connector limit never bites.
    for guess in ["a", "b", "c"] {
        assert_eq!(msg(&fresh().login("guest", guess)), "BadCredentialsException: Bad credentials");
    }
    let locked = |v: &Value| {
        let m = msg(v);
        let secs = m
            .strip_prefix("Too many failed logins, retry in ")
            .and_then(|m| m.strip_suffix(" seconds"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("not locked out: {v}"));
        assert!((1..=2).contains(&secs), "{m}");
        assert_eq!(v["code"], -1);
    };
    for guess in ["d", "e", "guest"] {
        locked(&fresh().login("guest", guess));
    }
    // The login token through `send` shares the counters.
    locked(&fresh().system("login", json!({"username": "guest", "password": "guest"})));
    // Another user from another connector is unaffected.
    assert_eq!(fresh().login("root", "root")["code"], 0);
    // Once the window has passed, the right password works again.
    let owner = fresh();
    let start = Instant::now();
    loop {
        let r = owner.login("guest", "guest");
        if r["code"] == 0 {
            break;
        }
        locked(&r);
        assert!(start.elapsed() < Duration::from_secs(15), "still locked out");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(owner.get("action=whoami").json()["username"], "guest");
}

/// Many password checks at once (each a 19 MiB argon2 computation) are bounded: the
/// server's peak memory stays far below one check's memory per request.
#[test]
fn a_burst_of_parallel_logins_is_bounded_in_memory() {
    let server = Server::start(&[("BROADCAST_LOGIN_EVENT", "false")]);
    let pid = server.pid();
    let workers: Vec<_> = (0..48)
        .map(|i| {
            let c = server.client();
            std::thread::spawn(move || {
                c.open();
                // A name per request: neither limit applies.
                let r = c.login(&format!("nobody{i}"), "guess");
                assert_eq!(r["msg"], "BadCredentialsException: Bad credentials", "{r}");
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // Unbounded, 48 checks at once took 700 MB; one per core stays near the start-up peak.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let peak = proc_kb(pid, "VmHWM");
    assert!(peak < (100 + 32 * cores) * 1024, "peak RSS {peak} kB for 48 logins on {cores} cores");
    assert_eq!(server.client().get("action=sync").text(), "[]");
}

/// A client that asks for a 32 MB download and never reads it, keeping the socket open, is
/// cut off after `write_timeout`: the server closes the connection and the file, and its
/// memory stays far below the file's size.
#[test]
fn a_client_that_never_reads_a_download_is_cut_off() {
    const LEN: usize = 32 * 1024 * 1024;
    let server = Server::start(&[("WRITE_TIMEOUT", "1"), ("HEADER_READ_TIMEOUT", "30")]);
    let pid = server.pid();
    write(&server.fs_root().join("public/big.bin"), &vec![7u8; LEN]);
    let c = server.client();
    c.open();
    assert_eq!(c.login("guest", "guest")["code"], 0);
    let mut s = connect_with_small_window(server.addr);
    let req = format!(
        "GET {ENDPOINT}?connectionId={}&action=download&filename=big.bin&alias=publicDir HTTP/1.1\r\nHost: x\r\n\r\n",
        c.connection_id
    );
    let sent = Instant::now();
    s.write_all(req.as_bytes()).unwrap();
    // The server holds the connection and the file while it waits; then lets both go.
    let (held, peak_rss) = wait_for_close(pid, server.addr, &s, sent);
    assert!(held >= Duration::from_millis(800), "cut before write_timeout: {held:?}");
    assert!(peak_rss < 64 * 1024, "server RSS reached {peak_rss} kB");
    let start = Instant::now();
    while server_holds_file(pid, "/public/big.bin") {
        assert!(start.elapsed() < Duration::from_secs(10), "the file is still open");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client, reading at last, finds the connection closed before the end of the file.
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed, "the connection is still open");
    assert!(got.len() < LEN, "the whole file went out");
    assert_eq!(c.get("action=whoami").status, 200, "the server still serves");
}

/// A client that never reads a 12 MB sync answer is cut off after `write_timeout`; with
/// `ack` nothing is lost: the next acknowledged sync gets the same packets again.
#[test]
fn a_client_that_never_reads_a_big_sync_answer_is_cut_off_and_loses_nothing_with_ack() {
    let server = Server::start(
        &NO_EVENTS
            .iter()
            .copied()
            .chain([("WRITE_TIMEOUT", "1"), ("MAX_QUEUE_BYTES", "16777216"), ("HEADER_READ_TIMEOUT", "30")])
            .collect::<Vec<_>>(),
    );
    let pid = server.pid();
    let (sender, receiver) = (server.client(), server.client());
    sender.open();
    assert_eq!(sender.login("guest", "guest")["code"], 0);
    let target = receiver.open();
    let r = receiver.get("action=sync&ack=1");
    assert_eq!(r.header("x-pollgate-seq"), Some("1"), "the welcome is acknowledged");
    let big = "z".repeat(1_000_000);
    for i in 0..12 {
        let t = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": target, "data": format!("{i}{big}")});
        let r = sender.post(&[("action", "send"), ("data", &t.to_string())]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut s = connect_with_small_window(server.addr);
    let req =
        format!("GET {ENDPOINT}?connectionId={}&action=sync&ack=1 HTTP/1.1\r\nHost: x\r\n\r\n", receiver.connection_id);
    let sent = Instant::now();
    s.write_all(req.as_bytes()).unwrap();
    let (held, _) = wait_for_close(pid, server.addr, &s, sent);
    assert!(held >= Duration::from_millis(800), "cut before write_timeout: {held:?}");
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed && got.len() < 12_000_000, "the answer went out whole ({} bytes)", got.len());
    // The reading client asks again and gets all twelve.
    let r = receiver.get("action=sync&ack=1");
    let packets = r.packets();
    assert_eq!(packets.len(), 12);
    for (i, p) in packets.iter().enumerate() {
        let v: Value = serde_json::from_str(p).unwrap();
        assert!(v["data"].as_str().unwrap().starts_with(&i.to_string()), "packet {i}");
    }
    assert_eq!(r.header("x-pollgate-seq"), Some("13"));
}

/// Requests too large for the HTTP parser get its defined answers, with no body: a request
/// target over 64 KiB 414, a header section over ~400 KiB or more than 100 headers 431.
#[test]
fn oversized_request_targets_and_headers_get_defined_answers() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let r = c.get(&format!("action=send&data={}", "a".repeat(70_000)));
    assert_eq!((r.status, r.text().as_str()), (414, ""));
    let huge = [("X-Huge", "h".repeat(500_000))];
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId=x&action=sync"), &[(huge[0].0, &huge[0].1)]);
    assert_eq!((r.status, r.text().as_str()), (431, ""));
    let names: Vec<String> = (0..150).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId=x&action=sync"), &many);
    assert_eq!((r.status, r.text().as_str()), (431, ""));
    assert_eq!(c.sync().text(), "[]", "the server still serves");
}
