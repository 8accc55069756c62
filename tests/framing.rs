//! HTTP framing at the edges, over raw TCP: one reading of where every request ends (a
//! zero-padded `Content-Length` cannot smuggle a request), HEAD that changes nothing, answers
//! that do not depend on how reads are cut, one header deadline per head, no secret in the
//! access log through an odd path, and RFC 9112's `Host` rules. The same smuggling attempts
//! through nginx are answered as nginx framed them.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::Nginx;
use support::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Everything the server writes until it has been quiet for `quiet` (or closes).
fn read_quiet(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return all,
            Err(_) => return all,
        }
    }
}

/// A request whose body, read as a request line by anything that took its `Content-Length`
/// for 0, grows by two bytes per `<` escaped and so pushes a `GET {ENDPOINT}/../metrics` past
/// the declared length: the tail then reads as a second request. `zeros` pad the length.
fn smuggling_post(zeros: usize) -> (String, usize) {
    // The smuggled request, padded to an even length: each of the `k` `<` grows by two.
    let mut smuggled = "GET /jWebSocket/metrics HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n".to_string();
    if smuggled.len() % 2 == 1 {
        smuggled = smuggled.replace("X-Pad: ", "X-Pad: a");
    }
    let k = smuggled.len() / 2;
    let fake_line = format!("x /{} HTTP/1.1\r\n\r\n", "<".repeat(k));
    let body = format!("{fake_line}{smuggled}");
    let declared = format!("{}{}", "0".repeat(zeros), body.len());
    let head = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {declared}\r\n\r\n"
    );
    (format!("{head}{body}"), body.len())
}

/// A `Content-Length` padded with 9,000 zeros frames the body at its value, as hyper and a
/// proxy read it: the bytes inside the body never run as a request of their own, and the
/// request after the body is answered next.
#[test]
fn a_zero_padded_content_length_cannot_smuggle_a_request() {
    let server = Server::start(NO_EVENTS);
    let (post, _) = smuggling_post(9_000);
    let mut s = connect(server.addr);
    s.write_all(format!("{post}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let all = read_quiet(&mut s, Duration::from_millis(1500));
    let answers = split_responses(&all);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 200], "{}", String::from_utf8_lossy(&all));
    assert_eq!(answers[0].text(), "Missing 'connectionId' parameter value!", "the POST is answered as itself");
    assert_eq!(answers[1].text(), "ok", "the request after the body is the health check");
    assert!(!String::from_utf8_lossy(&all).contains("# TYPE"), "the smuggled metrics request ran");
}

/// A HEAD of the endpoint runs no action: a `sync` drains nothing and a `close` closes
/// nothing. It is refused with 405 and `Allow`, and the GET that follows gets the packets.
#[test]
fn head_of_the_endpoint_changes_nothing() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    let me = c.open();
    let d = server.client();
    d.open();
    assert_eq!(d.login("guest", "guest")["code"], 0);
    let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": me, "data": "kept"});
    assert_eq!(d.send(&token).json()["code"], 0);
    for action in ["sync", "close", "send&data=x", "open"] {
        let head =
            format!("HEAD {ENDPOINT}?connectionId={}&action={action} HTTP/1.1\r\nHost: x\r\n\r\n", c.connection_id);
        let mut s = connect(server.addr);
        s.write_all(head.as_bytes()).unwrap();
        let all = read_quiet(&mut s, Duration::from_millis(500));
        let r = parse_response(&all);
        assert_eq!(r.status, 405, "HEAD action={action}: {}", String::from_utf8_lossy(&all));
        assert_eq!(r.header("allow"), Some("GET, POST, OPTIONS"), "HEAD action={action}");
        assert!(r.body.is_empty(), "a HEAD answer has no body");
    }
    let packets = c.sync().packets();
    assert!(packets.iter().any(|p| p.contains("\"data\":\"kept\"")), "the queue kept its packets: {packets:?}");
}

/// A 405 always carries `Allow`: the static files under `/` take GET and HEAD only.
#[test]
fn every_405_carries_allow() {
    let server = Server::start(NO_EVENTS);
    let r = raw(server.addr, b"DELETE /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = raw(
        server.addr,
        format!("PUT {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, OPTIONS"));
}

/// HEAD of a static file answers the GET's head: the same length, no body, and the request
/// after it on the connection is framed right.
#[test]
fn head_of_a_file_answers_the_head_of_its_get() {
    let server = Server::start(NO_EVENTS);
    let get = raw(server.addr, b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = connect(server.addr);
    s.write_all(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let all = read_quiet(&mut s, Duration::from_millis(800));
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = parse_response(&all[..head_end]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").map(str::to_owned), Some(get.body.len().to_string()));
    assert!(all[head_end..].starts_with(b"HTTP/1.1 200"), "no body after a HEAD answer");
    assert!(String::from_utf8_lossy(&all[head_end..]).ends_with("ok"));
}

/// A raw space in a long request target (as `HttpURLConnection` sends `data=`) gets the same
/// answer wherever the reads are cut: the space at every offset around 8 KB and 16 KB, each
/// sent as two writes that end right after it and right before it.
#[test]
fn how_reads_are_cut_never_changes_the_answer() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    let prefix = format!("GET {ENDPOINT}?connectionId={}&action=send&data=", c.connection_id);
    let mut s = connect(server.addr);
    for boundary in [8192usize, 16384] {
        for space_at in boundary - 6..boundary + 6 {
            // A token whose text puts a raw space at `space_at` of the request.
            let opening = r#"{"ns":"org.jwebsocket.plugins.system","type":"echo","data":""#;
            let fill = space_at - prefix.len() - opening.len();
            let data = format!("{} {}", "a".repeat(fill), "b".repeat(40));
            let request = format!("{prefix}{opening}{data}\"}} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(request.as_bytes()[space_at], b' ');
            for cut in [space_at, space_at + 1] {
                s.write_all(&request.as_bytes()[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                s.write_all(&request.as_bytes()[cut..]).unwrap();
                let mut buf = Vec::new();
                let r = loop {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).expect("an answer");
                    assert!(n > 0, "closed at space {space_at}, cut {cut}");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = split_responses(&buf).pop() {
                        break r;
                    }
                };
                assert_eq!(r.status, 200, "space at {space_at}, cut at {cut}: {}", r.text());
                assert_eq!(r.json()["data"], data, "space at {space_at}, cut at {cut}");
            }
        }
    }
}

/// A head that trickles in gets one `header_read_timeout`, however long it grows: a head
/// past 16 KB before the deadline is cut at the deadline, not given a second one.
#[test]
fn a_slow_head_gets_one_deadline() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "2")]);
    let mut s = connect(server.addr);
    let line = format!("X-Slow: {}\r\n", "s".repeat(1000));
    let start = Instant::now();
    s.write_all(format!("GET {ENDPOINT}?connectionId=abc&action=sync HTTP/1.1\r\nHost: x\r\n").as_bytes()).unwrap();
    // 17 KB within the first 1.7 s, then on at the same pace for up to 6 s.
    let closed_after = loop {
        if start.elapsed() > Duration::from_secs(6) {
            panic!("the head was still being read after 6 s");
        }
        if s.write_all(line.as_bytes()).is_err() {
            break start.elapsed();
        }
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(_) => break start.elapsed(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(closed_after >= Duration::from_millis(1800), "cut before the deadline: {closed_after:?}");
    assert!(closed_after < Duration::from_millis(3300), "given more than one deadline: {closed_after:?}");
}

/// A path that is no route is logged as a placeholder: a connection id in a malformed URL
/// (no `?`) never reaches the access log.
#[test]
fn odd_paths_keep_secrets_out_of_the_access_log() {
    let server = Server::start(&[("ACCESS_LOG", "true")]);
    let secret = "0123456789abcdefSECRETconnid";
    for target in [
        format!("/jWebSocket/hconnectionId={secret}&action=sync"),
        format!("/{secret}"),
        format!("/jWebSocket/admin/sessions/{secret}"),
    ] {
        let r = raw(server.addr, format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        assert!(r.status >= 400, "{target}: {}", r.status);
    }
    let r = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    assert!(log.contains("/healthz"), "known routes are logged: {log}");
    assert!(!log.contains(secret), "a connection id reached the log:\n{log}");
}

/// RFC 9112: an HTTP/1.1 request without `Host`, or with two, gets 400 and runs nothing.
#[test]
fn host_is_required_once() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    let me = c.open();
    let d = server.client();
    d.open();
    assert_eq!(d.login("guest", "guest")["code"], 0);
    let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": me, "data": "kept"});
    assert_eq!(d.send(&token).json()["code"], 0);
    let sync = format!("GET {ENDPOINT}?connectionId={}&action=sync HTTP/1.1\r\n", c.connection_id);
    for headers in ["", "Host: a\r\nHost: b\r\n"] {
        let r = raw(server.addr, format!("{sync}{headers}Connection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
        let r = raw(server.addr, format!("GET /healthz HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{headers:?}");
    }
    // HTTP/1.0 needs none.
    let r = raw(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let packets = c.sync().packets();
    assert!(packets.iter().any(|p| p.contains("\"data\":\"kept\"")), "no refused sync drained: {packets:?}");
}

/// The smuggling attempts sent through nginx (as `conf/nginx-cluster.conf` sets it up) are
/// answered as nginx framed them: one answer per request nginx saw, none for bytes inside a
/// body.
#[test]
fn through_nginx_requests_end_where_nginx_says() {
    let server = Server::start(NO_EVENTS);
    let nginx = Nginx::start(&[server.addr]);
    // nginx takes a length padded with some zeros; 9,000 are more than it reads in a line.
    for zeros in [0, 50, 9_000] {
        let (post, _) = smuggling_post(zeros);
        let mut s = connect(nginx.addr);
        s.write_all(format!("{post}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let all = read_quiet(&mut s, Duration::from_millis(1500));
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("# TYPE"), "zeros {zeros}: the smuggled metrics request ran: {text}");
        let statuses: Vec<u16> = split_responses(&all).iter().map(|r| r.status).collect();
        if zeros < 1000 {
            assert_eq!(statuses, [400, 200], "zeros {zeros}: {text}");
        } else {
            assert_eq!(statuses.first(), Some(&400), "zeros {zeros}: nginx refuses the line: {text}");
        }
    }
    // Both lengths at once, and a chunked body with a request inside: nginx refuses the
    // first and frames the second; pollgate answers what nginx forwarded.
    let inner = "GET /jWebSocket/metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let both = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
        inner.len()
    );
    let mut s = connect(nginx.addr);
    s.write_all(both.as_bytes()).unwrap();
    let all = read_quiet(&mut s, Duration::from_millis(1500));
    assert!(!String::from_utf8_lossy(&all).contains("# TYPE"), "{}", String::from_utf8_lossy(&all));
    let chunked = both.replace("Content-Length: 4\r\n", "");
    let mut s = connect(nginx.addr);
    s.write_all(format!("{chunked}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let all = read_quiet(&mut s, Duration::from_millis(1500));
    let statuses: Vec<u16> = split_responses(&all).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 200], "{}", String::from_utf8_lossy(&all));
    assert!(!String::from_utf8_lossy(&all).contains("# TYPE"));
}
