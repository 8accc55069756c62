//! Security properties of the endpoint: origin checks and CORS, size limits, the connection
//! id as a header and as a secret, slow clients, address binding, proxies, odd encodings.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const OPEN_BODY: &str =
    r#"{"ns":"org.jwebsocket.msgctrl","type":"info","name":"maxFrameSize","data":1048840,"jwsWrappedMsg":true}"#;

fn connector_id(connection_id: &str, ip: &str) -> String {
    pollgate::protocol::connector_id(connection_id, ip)
}

fn new_connection_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The welcome's `sourceId` from a sync response.
fn welcome_source_id(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let packets = r.packets();
    assert!(!packets.is_empty(), "no welcome: {}", r.text());
    let welcome: serde_json::Value = serde_json::from_str(&packets[0]).unwrap();
    assert_eq!(welcome["type"], "welcome", "{}", packets[0]);
    welcome["sourceId"].as_str().unwrap().to_owned()
}

/// An `Origin` outside `domains` gets 401 `Origin not allowed!` on open and sync, without CORS headers.
#[test]
fn foreign_origin_is_refused_on_open_and_sync() {
    let server = Server::start(&[("DOMAINS", "http://good.example")]);
    let c = server.client();
    let id = &c.connection_id;
    for origin in ["http://evil.example", "http://good.example.evil.com", "null"] {
        for action in ["open", "sync"] {
            let target = format!("{ENDPOINT}?connectionId={id}&action={action}");
            let r = get_with(server.addr, &target, &[("Origin", origin)]);
            assert_eq!((r.status, r.text().as_str()), (401, "Origin not allowed!"), "{origin} {action}");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert!(r.header("access-control-allow-origin").is_none(), "{:?}", r.headers);
        }
    }
    // The refused open did not create the connector.
    let r = c.get("action=send&data=x");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
}

/// An allowed `Origin` is served and echoed in `Access-Control-Allow-Origin`; no `Origin` is allowed too.
#[test]
fn allowed_origin_gets_cors_headers() {
    let server = Server::start(&[("DOMAINS", "http://good.example")]);
    let c = server.client();
    let origin = [("Origin", "http://good.example")];
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={}&action=open", c.connection_id), &origin);
    assert_eq!((r.status, r.text().as_str()), (200, OPEN_BODY));
    assert_eq!(r.header("access-control-allow-origin"), Some("http://good.example"));
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={}&action=sync", c.connection_id), &origin);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://good.example"));
    welcome_source_id(&r);
    // Without Origin (not a browser): served, no CORS headers.
    let r = c.sync();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert!(r.header("access-control-allow-origin").is_none());
}

fn preflight(addr: SocketAddr, origin: &str) -> Response {
    let req = format!(
        "OPTIONS {ENDPOINT} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type, x-pollgate-connection\r\nConnection: close\r\n\r\n"
    );
    raw(addr, req.as_bytes())
}

/// A CORS preflight from an allowed origin is 204 with the allowed methods and headers; another origin gets 401.
#[test]
fn preflight_is_answered_for_allowed_origins_only() {
    let server = Server::start(&[("DOMAINS", "http://good.example")]);
    let r = preflight(server.addr, "http://good.example");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some("http://good.example"));
    let methods = r.header("access-control-allow-methods").expect("allow-methods");
    for m in ["GET", "POST"] {
        assert!(methods.split(',').any(|x| x.trim() == m), "{methods}");
    }
    let allowed = r.header("access-control-allow-headers").expect("allow-headers").to_ascii_lowercase();
    for h in ["content-type", "x-pollgate-connection"] {
        assert!(allowed.split(',').any(|x| x.trim() == h), "{allowed}");
    }

    let r = preflight(server.addr, "http://evil.example");
    assert_eq!((r.status, r.text().as_str()), (401, "Origin not allowed!"));
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-methods").is_none());
}

/// A body over `maxframesize` gets 413 with a plain-text reason: declared, chunked, or a long GET query.
#[test]
fn oversized_requests_get_413() {
    let server = Server::start(&[("MAXFRAMESIZE", "1000")]);
    let reason = "Request too large: the limit is 1000 bytes!";
    let c = server.client();
    let r = c.get("action=open");
    assert_eq!(r.status, 200);
    assert!(r.text().contains(r#""data":1000"#), "{}", r.text());

    // Declared Content-Length over the limit: refused before the body is read (none is sent).
    let req = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 10000000\r\nConnection: close\r\n\r\n"
    );
    let r = raw(server.addr, req.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (413, reason));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // A declared body just over the limit, sent in full.
    let body = format!("connectionId={}&action=send&data={}", c.connection_id, "x".repeat(1000));
    let r = post(server.addr, ENDPOINT, "application/x-www-form-urlencoded", body.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (413, reason));

    // A chunked body (no declared length) that grows over the limit.
    let chunk = "y".repeat(1500);
    let req = format!(
        "POST {ENDPOINT}?connectionId={}&action=send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        c.connection_id,
        chunk.len()
    );
    let r = raw(server.addr, req.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (413, reason));

    // A GET whose query is longer than the limit.
    let r = c.get(&format!("action=send&data={}", "z".repeat(1200)));
    assert_eq!((r.status, r.text().as_str()), (413, reason));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // Under the limit all is well.
    let echo = json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "ok"});
    let r = c.send(&echo);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"], "ok");
}

/// `X-Pollgate-Connection` replaces the `connectionId` parameter: open and sync by header reach one connector.
#[test]
fn connection_id_in_a_header() {
    let server = Server::start(&[]);
    let id = new_connection_id();
    let header = [("X-Pollgate-Connection", id.as_str())];
    let r = get_with(server.addr, &format!("{ENDPOINT}?action=open"), &header);
    assert_eq!((r.status, r.text().as_str()), (200, OPEN_BODY));
    let r = get_with(server.addr, &format!("{ENDPOINT}?action=sync"), &header);
    assert_eq!(welcome_source_id(&r), connector_id(&id, "127.0.0.1"));
    // The header names the same connector the parameter would.
    let by_param = Client { addr: server.addr, connection_id: id.clone() };
    let r = by_param.get("action=open");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    // POST with the header only.
    let echo = json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "hdr"}).to_string();
    let body = format!("action=send&data={}", enc(&echo));
    let r = post_with(
        server.addr,
        ENDPOINT,
        &[("Content-Type", "application/x-www-form-urlencoded"), ("X-Pollgate-Connection", &id)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], "hdr");
    let r = get_with(server.addr, &format!("{ENDPOINT}?action=close"), &header);
    assert_eq!((r.status, r.text().as_str()), (200, "http.command.close"));
}

/// Neither the connection id nor a password ever reaches the log, even at debug level.
#[test]
fn secrets_never_reach_the_log() {
    let password = "Corr3ct-H0rse-Battery-Staple";
    let wrong = "Wr0ng-Pa55word-Never-Logged";
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let hash = pollgate::auth::hash_password(password);
    std::fs::write(
        &users,
        format!(
            "[[users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n\
             rights = [\"org.jwebsocket.plugins.filesystem.load\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(&[("USERS_FILE", users.to_str().unwrap())]);
    let c = server.client();
    let d = server.client();
    c.open();
    d.open_with(&format!("&sessionId={}", new_connection_id()));
    let r = c.login("alice", wrong);
    assert_eq!(r["code"], -1, "{r}");
    let r = c.login("alice", password);
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(c.system("echo", json!({"data": "hello"}))["data"], "hello");
    // Login through a token too, and a request whose connection id is in a header.
    d.system("login", json!({"username": "alice", "password": wrong}));
    let r = get_with(server.addr, &format!("{ENDPOINT}?action=sync"), &[("X-Pollgate-Connection", &d.connection_id)]);
    assert_eq!(r.status, 200);
    // A shared poll names both connection ids in its body; a refused one too.
    let r = shared_poll(server.addr, &c, &[(&c, 0), (&d, 0)], 0);
    assert_eq!(r.status, 200, "{}", r.text());
    let twice = json!([{"connectionId": c.connection_id, "ack": 0}, {"connectionId": c.connection_id, "ack": 0}]);
    let r = shared_poll_raw(server.addr, &d, &format!("action=sync&share={}", enc(&twice.to_string())));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c.get("action=download&filename=..%2Fx");
    assert_eq!(r.status, 200);
    let r = c.get("action=nonsense");
    assert_eq!(r.status, 404);
    let r = c.get("action=close");
    assert_eq!(r.text(), "http.command.close");
    let r = d.get("action=close");
    assert_eq!(r.text(), "http.command.close");
    // Refused requests carry the id too.
    assert_eq!(c.get("action=send&data=x").status, 400);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    assert!(log.contains("DEBUG"), "debug logging is on: {log}");
    for secret in [c.connection_id.as_str(), d.connection_id.as_str(), password, wrong] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

/// A client that trickles its headers is disconnected after `header_read_timeout` (1 s), even while sending.
#[test]
fn trickling_headers_are_cut_off() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1")]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    s.write_all(format!("GET {ENDPOINT}?connectionId=abc&action=sync HTTP/1.1\r\nHost: x\r\n").as_bytes()).unwrap();
    let mut received = Vec::new();
    let closed_after = loop {
        assert!(start.elapsed() < Duration::from_secs(8), "still connected after 8 s");
        // Keep trickling: a header line every 100 ms never completes the head.
        if s.write_all(b"X-Slow: a\r\n").is_err() {
            break start.elapsed();
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(closed_after >= Duration::from_millis(800), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(5), "closed too late: {closed_after:?}");
    if !received.is_empty() {
        let r = parse_response(&received);
        assert_eq!(r.status, 408, "{}", r.text());
    }
    // The server still serves.
    assert_eq!(server.client().sync().text(), "[]");
}

/// A body that never completes gets 408 after `body_read_timeout` (1 s).
#[test]
fn incomplete_body_gets_408() {
    let server = Server::start(&[("BODY_READ_TIMEOUT", "1")]);
    let c = server.client();
    c.open();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let req = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 200\r\nConnection: close\r\n\r\nconnectionId={}&action=send&data=",
        c.connection_id
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let elapsed = start.elapsed();
    let r = parse_response(&buf);
    assert_eq!((r.status, r.text().as_str()), (408, "Request body not received in time!"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(c.sync().status, 200, "the server still serves");
}

/// The same connectionId from another client address is another connector (`bind_connection_to_ip`).
#[test]
fn connection_id_is_bound_to_the_client_address() {
    let server = Server::start(&[]);
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let c = server.client();
    let id = &c.connection_id;
    assert_eq!(c.open(), connector_id(id, "127.0.0.1"));
    // From 127.0.0.2 the connector does not exist...
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=send&data=x"));
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=sync"));
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    // ...and opening it there makes a second one with its own sourceId.
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=open"));
    assert_eq!((r.status, r.text().as_str()), (200, OPEN_BODY));
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=sync"));
    assert_eq!(welcome_source_id(&r), connector_id(id, "127.0.0.2"));
    // The first is untouched.
    let r = c.get("action=whoami");
    assert_eq!(r.json()["sourceId"], connector_id(id, "127.0.0.1"));
}

/// With `bind_connection_to_ip` off the connector id is md5(connectionId) and any address reaches it.
#[test]
fn unbound_connection_id_follows_the_client() {
    let server = Server::start(&[("BIND_CONNECTION_TO_IP", "false")]);
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let c = server.client();
    let id = &c.connection_id;
    assert_eq!(c.open(), connector_id(id, ""));
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=open"));
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    let r = get_from(other, server.addr, &format!("{ENDPOINT}?connectionId={id}&action=close"));
    assert_eq!((r.status, r.text().as_str()), (200, "http.command.close"));
}

/// `X-Forwarded-For` is ignored from an untrusted peer: the sourceId uses the peer address.
#[test]
fn forwarded_for_is_ignored_from_untrusted_peers() {
    let server = Server::start(&[]);
    let id = new_connection_id();
    let xff = [("X-Forwarded-For", "203.0.113.7")];
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id}&action=open"), &xff);
    assert_eq!(r.status, 200);
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id}&action=sync"), &xff);
    assert_eq!(welcome_source_id(&r), connector_id(&id, "127.0.0.1"));
    // A spoofed header does not move the client to another connector.
    let r = get_with(
        server.addr,
        &format!("{ENDPOINT}?connectionId={id}&action=open"),
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
}

/// From a trusted proxy, the last untrusted `X-Forwarded-For` hop is the client address.
#[test]
fn forwarded_for_is_believed_from_trusted_proxies() {
    let server = Server::start(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    let id = new_connection_id();
    let xff = [("X-Forwarded-For", "203.0.113.7")];
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id}&action=open"), &xff);
    assert_eq!(r.status, 200);
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id}&action=sync"), &xff);
    assert_eq!(welcome_source_id(&r), connector_id(&id, "203.0.113.7"));
    // Without the header the proxy's own address is used: another connector.
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id}&action=sync"), &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    // A chain: the client-supplied first hop is not believed past an untrusted hop.
    let id2 = new_connection_id();
    let chain = [("X-Forwarded-For", "10.9.9.9, 198.51.100.1, 127.0.0.1")];
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id2}&action=open"), &chain);
    assert_eq!(r.status, 200);
    let r = get_with(server.addr, &format!("{ENDPOINT}?connectionId={id2}&action=sync"), &chain);
    assert_eq!(welcome_source_id(&r), connector_id(&id2, "198.51.100.1"));
    // The peer 127.0.0.2 is not trusted: its header is ignored.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let id3 = new_connection_id();
    let req = |action: &str| {
        format!(
            "GET {ENDPOINT}?connectionId={id3}&action={action} HTTP/1.1\r\nHost: x\r\n\
             X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(raw_from(other, server.addr, req("open").as_bytes()).status, 200);
    let r = raw_from(other, server.addr, req("sync").as_bytes());
    assert_eq!(welcome_source_id(&r), connector_id(&id3, "127.0.0.2"));
}

/// One kept-alive connection can carry many clients (a proxy reuses its upstream
/// connections): the connector id is derived per request, whatever the connection carried
/// before, from the connection id and the forwarded address.
#[test]
fn one_connection_carries_many_clients() {
    let server = Server::start(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    let (id, id2) = (new_connection_id(), new_connection_id());
    let steps = [(&id, "203.0.113.7"), (&id, "198.51.100.9"), (&id2, "198.51.100.9"), (&id, "203.0.113.7")];
    let mut pipeline = String::new();
    for (n, (connection_id, client)) in steps.iter().enumerate() {
        let close = if n + 1 == steps.len() { "Connection: close\r\n" } else { "" };
        for action in ["open", "sync"] {
            pipeline.push_str(&format!(
                "GET {ENDPOINT}?connectionId={connection_id}&action={action} HTTP/1.1\r\nHost: x\r\n\
                 X-Forwarded-For: {client}\r\n{}\r\n",
                if action == "sync" { close } else { "" }
            ));
        }
    }
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(pipeline.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let responses = split_responses(&buf);
    assert_eq!(responses.len(), 2 * steps.len(), "{}", String::from_utf8_lossy(&buf));
    for (n, (connection_id, client)) in steps.iter().enumerate() {
        let (open, sync) = (&responses[2 * n], &responses[2 * n + 1]);
        if n + 1 < steps.len() {
            assert_eq!(open.status, 200, "step {n}: {}", open.text());
            assert_eq!(welcome_source_id(sync), connector_id(connection_id, client), "step {n}");
        } else {
            // The first client again: its connector is live, so open is refused, and its
            // queue holds what came after its welcome: the other two clients' connect events.
            assert_eq!((open.status, open.text().as_str()), (400, "Invalid connection state!"));
            let connected: Vec<String> = sync
                .packets()
                .iter()
                .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap())
                .filter(|p| p["name"] == "connect")
                .map(|p| p["sourceId"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(connected, [connector_id(&id, "198.51.100.9"), connector_id(&id2, "198.51.100.9")]);
        }
    }
}

/// Invalid UTF-8 and NUL in parameters get a defined answer (never 500) and the server keeps serving.
#[test]
fn invalid_utf8_and_nul_get_defined_answers() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    // Not JSON after decoding: no packet, empty 200.
    let r = c.get("action=send&data=%FF%00");
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    // Inside a token: invalid UTF-8 becomes U+FFFD.
    let r = c.get(r#"action=send&data={"ns":"org.jwebsocket.plugins.system","type":"echo","data":"%FFx"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], "\u{FFFD}x");
    // A raw NUL inside a JSON string makes the data not JSON: no packet, empty 200.
    let r = c.get(r#"action=send&data={"ns":"org.jwebsocket.plugins.system","type":"echo","data":"%00"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    // Raw (unescaped) 0xFF in the query string.
    let mut req = format!("GET {ENDPOINT}?connectionId={}&action=send&data=", c.connection_id).into_bytes();
    req.extend_from_slice(b"\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = raw(server.addr, &req);
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    // Odd values in the protocol's own parameters.
    let r = c.get("action=%FF%00");
    assert_eq!((r.status, r.text().as_str()), (404, "Invalid request!"));
    let r = c.get("action=login&username=%FF%00&password=%00");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["code"], -1);
    let r = c.get("action=download&filename=%00");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["msg"], "access denied");
    let r = c.get("action=download&filename=%FF&alias=%00");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["code"], -1);
    // A connection id made of such bytes works like any other.
    let odd = Client { addr: server.addr, connection_id: "%FF%00%C3".into() };
    let r = odd.get("action=open");
    assert_eq!((r.status, r.text().as_str()), (200, OPEN_BODY));
    welcome_source_id(&odd.sync());
    // A NUL byte raw in the request line is a malformed request: 400, not 500.
    let mut req = format!("GET {ENDPOINT}?connectionId=").into_bytes();
    req.extend_from_slice(b"a\x00b&action=open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = raw(server.addr, &req);
    assert_eq!(r.status, 400, "{}", r.text());
    // The server keeps serving.
    let r = c.send(&json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "still"}));
    assert_eq!(r.json()["data"], "still");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
