//! HTTP/1.1 on the wire: keep-alive, pipelining, bodies in pieces, a client that goes away, and
//! every kind of request (chunked, `Expect`, other methods and paths, HTTP/1.0) on one
//! connection, all read by pollgate's one HTTP/1.1 layer (`src/conn/`).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use std::net::TcpStream;
use support::*;

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until `n` whole responses (framed by `Content-Length`, or bodiless) have come.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let responses = split_responses(&buf);
        if responses.len() >= n {
            assert_eq!(responses.len(), n, "more responses than requests");
            return responses;
        }
        let got = s.read(&mut chunk).expect("read");
        assert!(got > 0, "closed after {} of {n} responses: {:?}", responses.len(), String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Whether the server closes the connection (reads to its end, within 10 s).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

fn echo_token(data: &str) -> String {
    json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": data}).to_string()
}

fn sync_request(connection_id: &str) -> String {
    format!("GET {ENDPOINT}?connectionId={connection_id}&action=sync HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn send_request(connection_id: &str, data: &str) -> String {
    let body = format!("connectionId={connection_id}&action=send&data={}", enc(&echo_token(data)));
    format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Requests written all at once are answered in order on the one connection, each framed by
/// its `Content-Length` and dated; the connection serves on, and `Connection: close` ends it
/// after its answer.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(NO_EVENTS);
    let id = "pipelined";
    let open = format!("GET {ENDPOINT}?connectionId={id}&action=open HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut s = connect(&server);
    let all = [open, sync_request(id), send_request(id, "one"), send_request(id, "two"), sync_request(id)].concat();
    s.write_all(all.as_bytes()).unwrap();
    let answers = read_responses(&mut s, 5);
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")), "{:?}", r.headers);
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    }
    assert!(answers[0].text().contains("maxFrameSize"), "open: {}", answers[0].text());
    assert!(answers[1].text().contains("welcome"), "the first sync: {}", answers[1].text());
    assert_eq!((answers[2].json()["data"].as_str(), answers[3].json()["data"].as_str()), (Some("one"), Some("two")));
    assert_eq!(answers[4].text(), "[]", "the sends answered in their own responses");

    // Later, on the same connection; then `Connection: close`.
    s.write_all(send_request(id, "three").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].json()["data"], "three");
    let last = format!("GET {ENDPOINT}?connectionId={id}&action=sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(last.as_bytes()).unwrap();
    let r = &read_responses(&mut s, 1)[0];
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(closed_by_server(&mut s), "still open after Connection: close");
}

/// A body that comes in pieces, after its head, is read whole; a request pipelined right
/// behind it is answered next. (The answer, the body echoed, is larger than what the own
/// path writes in one piece with its head.)
#[test]
fn a_body_in_pieces_is_read_whole() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    let request = send_request(&c.connection_id, &"x".repeat(30_000));
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    let mut s = connect(&server);
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.as_bytes().chunks(10_000) {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(piece).unwrap();
    }
    s.write_all(send_request(&c.connection_id, "next").as_bytes()).unwrap();
    let answers = read_responses(&mut s, 2);
    assert_eq!(answers[0].json()["data"].as_str().map(str::len), Some(30_000));
    assert_eq!(answers[1].json()["data"], "next");
}

/// Requests beyond the endpoint's plain GETs and POSTs (a chunked body, `Expect:
/// 100-continue`, a preflight, a static file, HTTP/1.0) are served on the same connection,
/// and every request after them too.
#[test]
fn every_kind_of_request_is_served_on_the_same_connection() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    let id = c.connection_id.clone();
    let mut s = connect(&server);
    s.write_all(sync_request(&id).as_bytes()).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].text(), "[]");

    let body = format!("connectionId={id}&action=send&data={}", enc(&echo_token("chunked")));
    let chunked = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(chunked.as_bytes()).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].json()["data"], "chunked");
    // The connection serves on: an endpoint request after it is answered alike.
    s.write_all(send_request(&id, "after").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].json()["data"], "after");

    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut s = connect(&server);
    let request = send_request(&id, "expected");
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 2);
    s.write_all(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&body.as_bytes()[2..]).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].json()["data"], "expected");

    // A preflight, then a static file, then the endpoint again, pipelined.
    let mut s = connect(&server);
    let head = format!("OPTIONS {ENDPOINT} HTTP/1.1\r\nHost: x\r\n\r\n");
    let file = "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all([head.as_str(), file, &send_request(&id, "last")].concat().as_bytes()).unwrap();
    let answers = read_responses(&mut s, 3);
    assert_eq!((answers[0].status, answers[0].body.len()), (204, 0));
    assert_eq!(answers[1].status, 200);
    assert!(answers[1].header("content-type").is_some_and(|t| t.starts_with("text/html")), "{:?}", answers[1].headers);
    assert_eq!(answers[2].json()["data"], "last");

    // HTTP/1.0: answered, then closed.
    let mut s = connect(&server);
    s.write_all(format!("GET {ENDPOINT}?connectionId={id}&action=sync HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(parse_response(&all).status, 200, "{}", String::from_utf8_lossy(&all));
}

/// A body whose length is ambiguous or malformed is refused with 400 and its connection
/// closed (a request smuggled behind it is never run); the server serves on.
#[test]
fn ambiguous_body_lengths_are_refused() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    let smuggled = send_request(&c.connection_id, "smuggled");
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: +5",
        "Content-Length: 0x5",
    ] {
        let mut s = connect(&server);
        let request = format!("POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nabcde{smuggled}");
        s.write_all(request.as_bytes()).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let r = parse_response(&all);
        assert_eq!(r.status, 400, "{framing:?}: {}", String::from_utf8_lossy(&all));
        assert!(!String::from_utf8_lossy(&all).contains("smuggled"), "{framing:?}: the smuggled send ran");
    }
    assert_eq!(c.sync().text(), "[]", "no smuggled send queued anything, and the server serves");
}

/// A head of 40 KB (far beyond one read) is served, and the connection serves on.
#[test]
fn a_large_head_is_served() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    let mut s = connect(&server);
    let padded = format!(
        "GET {ENDPOINT}?connectionId={}&action=sync HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        c.connection_id,
        "p".repeat(40 * 1024)
    );
    s.write_all(padded.as_bytes()).unwrap();
    let r = &read_responses(&mut s, 1)[0];
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    s.write_all(send_request(&c.connection_id, "then").as_bytes()).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].json()["data"], "then");
}

/// A held poll whose client goes away ends at once, not at the end of its wait: the poll
/// count falls back, and the connector's next poll is answered.
#[test]
fn a_held_poll_ends_when_its_client_goes_away() {
    let server = Server::start(NO_EVENTS);
    let c = server.client();
    c.open();
    c.sync();
    let mut s = connect(&server);
    let held =
        format!("GET {ENDPOINT}?connectionId={}&action=sync&wait=30000 HTTP/1.1\r\nHost: x\r\n\r\n", c.connection_id);
    s.write_all(held.as_bytes()).unwrap();
    let wait_for = |polls: f64| {
        let start = Instant::now();
        while server.metric("pollgate_held_polls") != polls {
            assert!(start.elapsed() < Duration::from_secs(10), "held polls not {polls}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(1.0);
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut nothing = [0u8; 16];
    assert!(
        matches!(s.read(&mut nothing), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the poll is held"
    );
    drop(s);
    wait_for(0.0);
    assert_eq!(c.sync().text(), "[]");
}
