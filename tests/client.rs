//! The Rust client (`pollgate::client`) against the real server: requests in order, the
//! local queue limit, deadlines, closes, the clock estimate, session changes, and a proxy
//! that drops responses without anything being lost or repeated.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use pollgate::client::{Builder, CloseReason, Error, Incoming, Session};
use serde_json::{json, Value};
use support::faults::{drop_when, splitmix64, FaultProxy};
use support::{Server, NO_EVENTS};

const SYSTEM: &str = "org.jwebsocket.plugins.system";

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/jWebSocket/http")
}

/// A builder with short retry pauses, so tests that retry stay fast.
fn builder(addr: SocketAddr) -> Builder {
    Session::builder(url(addr)).retry_timeout(Duration::from_millis(10)).timeout(Duration::from_secs(10))
}

/// A session whose `on_close` reasons go to the returned channel.
async fn with_close_log(b: Builder) -> (Session, tokio::sync::mpsc::UnboundedReceiver<CloseReason>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let session = b.on_close(move |reason| tx.send(reason.clone()).unwrap()).connect().await.expect("connect");
    (session, rx)
}

/// The next pushed packet as JSON, failing the test after 10 s.
async fn next_json(incoming: &mut Incoming) -> Value {
    let packet = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await.expect("a packet in time");
    packet.expect("the stream ended").json().expect("a JSON packet")
}

fn send_to(target: &str, data: Value, utid: i64) -> Value {
    json!({"ns": SYSTEM, "type": "send", "targetId": target, "data": data, "utid": utid})
}

/// Open, welcome, login (right and wrong), a request's response, a pushed packet.
#[tokio::test]
async fn open_login_send_and_receive() {
    let server = Server::start(NO_EVENTS);
    let a = builder(server.addr).connect().await.unwrap();
    let b = builder(server.addr).connect().await.unwrap();
    let welcome = a.welcome();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["sourceId"], a.source_id().as_str());
    assert_ne!(a.source_id(), b.source_id());

    match a.login("guest", "wrong").await {
        Err(Error::Refused { msg, .. }) => assert_eq!(msg, "BadCredentialsException: Bad credentials"),
        other => panic!("a wrong password: {other:?}"),
    }
    let login = a.login("guest", "guest").await.unwrap();
    assert_eq!(login["username"], "guest");
    assert_eq!(a.whoami().await.unwrap()["username"], "guest");

    let echo = a.send_token(&json!({"ns": SYSTEM, "type": "echo", "data": "hello"})).await.unwrap();
    let echo: Value = serde_json::from_str(&echo).unwrap();
    assert_eq!((echo["reqType"].as_str(), echo["data"].as_str()), (Some("echo"), Some("hello")));

    let mut incoming = b.incoming().unwrap();
    assert!(b.incoming().is_none(), "the stream is handed out once");
    let reply: Value =
        serde_json::from_str(&a.send_token(&send_to(&b.source_id(), json!("hi"), 7)).await.unwrap()).unwrap();
    assert_eq!((reply["code"].as_i64(), reply["utid"].as_i64()), (Some(0), Some(7)));
    let pushed = next_json(&mut incoming).await;
    assert_eq!((pushed["type"].as_str(), pushed["data"].as_str()), (Some("send"), Some("hi")));
    assert_eq!(pushed["sourceId"], a.source_id().as_str());

    a.close().await.unwrap();
    assert_eq!(a.close_reason(), Some(CloseReason::Client));
    assert!(matches!(a.whoami().await, Err(Error::Closed(CloseReason::Client))));
    b.close().await.unwrap();
    assert!(incoming.next().await.is_none(), "the stream ends with the session");
}

/// Many requests issued at once run one at a time in call order: over one connection, their
/// responses match and their side effects (packets to another client) arrive in that order.
#[tokio::test]
async fn requests_run_one_at_a_time_in_order() {
    let server = Server::start(NO_EVENTS);
    // A pass-through proxy counts the connections the sender's requests use.
    let proxy = FaultProxy::start(server.addr, drop_when(|_| false)).await;
    let a = builder(proxy.addr).backchannel(false).connect().await.unwrap();
    let b = builder(server.addr).connect().await.unwrap();
    a.login("guest", "guest").await.unwrap();
    let mut incoming = b.incoming().unwrap();
    let target = b.source_id();
    // Issued without awaiting: each call is queued when made.
    let pending: Vec<_> = (0..200).map(|i| a.send_token(&send_to(&target, json!(i), i))).collect();
    for (i, reply) in futures_util::future::join_all(pending).await.into_iter().enumerate() {
        let reply: Value = serde_json::from_str(&reply.unwrap()).unwrap();
        assert_eq!((reply["code"].as_i64(), reply["utid"].as_i64()), (Some(0), Some(i as i64)));
    }
    for i in 0..200 {
        assert_eq!(next_json(&mut incoming).await["data"], i);
    }
    // HTTP/1.1 without pipelining: one connection means one request at a time.
    assert_eq!(proxy.count(|c| &c.connections), 1);
}

/// A request beyond `max_queue_length` waiting requests is refused at once; the others run.
#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let server = Server::start(NO_EVENTS);
    let a = builder(server.addr).max_queue_length(2).connect().await.unwrap();
    let slow = a.send_token(&json!({"ns": SYSTEM, "type": "wait", "duration": 1000}));
    // Wait until the pipeline has started it: the queue is empty again.
    while a.num_pending() != 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let echo = |n: i64| a.send_token(&json!({"ns": SYSTEM, "type": "echo", "data": n.to_string(), "utid": n}));
    let (second, third) = (echo(2), echo(3));
    assert_eq!(a.num_pending(), 2);
    // Decided when called: the future is ready at once.
    let refused = echo(4).now_or_never().expect("refused without waiting");
    assert_eq!(refused, Err(Error::QueueFull { max_queue_length: 2 }));
    let slow: Value = serde_json::from_str(&slow.await.unwrap()).unwrap();
    assert_eq!(slow["duration"], 1000);
    for (reply, n) in [(second.await, 2), (third.await, 3)] {
        assert_eq!(serde_json::from_str::<Value>(&reply.unwrap()).unwrap()["utid"], n);
    }
    assert!(!a.is_closed());
}

/// A request that outlives `timeout` fails with `Timeout` and closes the session, and the
/// connector on the server.
#[tokio::test]
async fn a_request_past_its_timeout_closes_the_session() {
    let server = Server::start(NO_EVENTS);
    let raw = server.client();
    let b = builder(server.addr).connection_id(raw.connection_id.clone()).timeout(Duration::from_millis(400));
    let (a, mut closes) = with_close_log(b).await;
    let quick = a.send_token(&json!({"ns": SYSTEM, "type": "wait", "duration": 10})).await;
    assert!(quick.is_ok(), "{quick:?}");
    let slow = a.send_token(&json!({"ns": SYSTEM, "type": "wait", "duration": 3000}));
    let queued = a.whoami();
    assert_eq!(slow.await, Err(Error::Timeout));
    let reason = CloseReason::Failed(Box::new(Error::Timeout));
    assert_eq!(queued.await, Err(Error::Closed(reason.clone())), "a queued request fails with the reason");
    assert_eq!(closes.recv().await, Some(reason.clone()));
    assert_eq!(a.whoami().await, Err(Error::Closed(reason)));
    assert!(closes.try_recv().is_err(), "on_close runs once");
    // The client closes the connector in the background, best effort.
    let mut status = 0;
    for _ in 0..100 {
        status = raw.post(&[("action", "whoami")]).status;
        if status == 411 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 411, "the connector is still open on the server");
}

/// A server-side close (eviction by a newer connection) reaches `on_close` with the
/// server's reason, ends the stream and fails later calls.
#[tokio::test]
async fn a_server_close_reaches_on_close() {
    let mut env = NO_EVENTS.to_vec();
    env.extend([("MAXCONNECTIONS", "1"), ("ONMAXCONNECTIONS", "close")]);
    let server = Server::start(&env);
    let (a, mut closes) = with_close_log(builder(server.addr)).await;
    let mut incoming = a.incoming().unwrap();
    let _b = builder(server.addr).connect().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), closes.recv()).await.expect("closed in time");
    assert_eq!(reason, Some(CloseReason::Server(Some("evicted".into()))));
    assert_eq!(a.closed().await, CloseReason::Server(Some("evicted".into())));
    assert!(incoming.next().await.is_none());
    assert!(matches!(a.whoami().await, Err(Error::Closed(CloseReason::Server(_)))));
}

/// A connector the server no longer knows (closed and forgotten behind the client's back)
/// fails the next request with `UnknownConnector` and closes the session.
#[tokio::test]
async fn an_unknown_connector_closes_the_session() {
    let server = Server::start(NO_EVENTS);
    let raw = server.client();
    let b = builder(server.addr).connection_id(raw.connection_id.clone()).backchannel(false);
    let (a, mut closes) = with_close_log(b).await;
    // A client close removes the connector at once.
    assert_eq!(raw.post(&[("action", "close")]).text(), "http.command.close");
    let echo = a.send_token(&json!({"ns": SYSTEM, "type": "echo", "data": "x"})).await;
    assert_eq!(echo, Err(Error::UnknownConnector));
    assert_eq!(closes.recv().await, Some(CloseReason::Failed(Box::new(Error::UnknownConnector))));
    assert!(a.incoming().unwrap().next().await.is_none(), "no back channel: the stream is empty");
}

/// The poller notices a connector that vanished (its syncs get `[]` at once) and closes.
#[tokio::test]
async fn the_poller_notices_an_unknown_connector() {
    let server = Server::start(NO_EVENTS);
    let raw = server.client();
    let (a, mut closes) = with_close_log(builder(server.addr).connection_id(raw.connection_id.clone())).await;
    // Closed behind its back (a client close removes the connector at once): the held poll
    // answers `[]` at once, and so does every later sync.
    raw.post(&[("action", "close")]);
    let reason = tokio::time::timeout(Duration::from_secs(10), closes.recv()).await.expect("closed in time").unwrap();
    assert_eq!(reason, CloseReason::Failed(Box::new(Error::UnknownConnector)));
    assert!(a.is_closed());
}

/// A poll superseded by another sync of the same connector is not mistaken for a close.
#[tokio::test]
async fn a_superseded_poll_is_not_a_close() {
    let server = Server::start(NO_EVENTS);
    let raw = server.client();
    let a = builder(server.addr).connection_id(raw.connection_id.clone()).connect().await.unwrap();
    let b = builder(server.addr).connect().await.unwrap();
    b.login("guest", "guest").await.unwrap();
    let mut incoming = a.incoming().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A second sync (with an ack that keeps everything) wins over the held poll.
    let stolen = tokio::task::spawn_blocking(move || raw.get("action=sync&ack=1&wait=300")).await.unwrap();
    assert_eq!(stolen.status, 200);
    b.send_token(&send_to(&a.source_id(), json!("still here"), 1)).await.unwrap();
    assert_eq!(next_json(&mut incoming).await["data"], "still here");
    assert!(!a.is_closed());
}

/// The clock offset to a server on this machine is zero within the stated precision.
#[tokio::test]
async fn the_clock_offset_is_plausible() {
    let server = Server::start(NO_EVENTS);
    let a = builder(server.addr).backchannel(false).connect().await.unwrap();
    for _ in 0..5 {
        a.whoami().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let offset = a.clock_offset().expect("an estimate");
    assert!(offset.precision_ms <= 1000, "{offset:?}");
    assert!(offset.offset_ms.abs() <= offset.precision_ms, "{offset:?}");
}

/// `change_session_id` re-opens the connector in a shared session: same `sourceId`, the
/// shared session's login, nothing queued before the change lost, packets after it arrive.
#[tokio::test]
async fn change_session_id_joins_a_shared_session() {
    let server = Server::start(NO_EVENTS);
    let other = server.client();
    other.open_with("&sessionId=shared-1");
    assert_eq!(other.login("guest", "guest")["code"], 0);
    let a = builder(server.addr).connect().await.unwrap();
    let mut incoming = a.incoming().unwrap();
    let source_id = a.source_id();
    assert_eq!(a.whoami().await.unwrap()["username"], Value::Null);
    assert_eq!(other.system("send", json!({"targetId": source_id, "data": "before"}))["code"], 0);

    assert_eq!(a.change_session_id(Some("shared-1")).await.unwrap(), None);
    assert_eq!(a.session_id().as_deref(), Some("shared-1"));
    assert_eq!(a.source_id(), source_id);
    assert_eq!(a.whoami().await.unwrap()["username"], "guest");
    assert_eq!(other.system("send", json!({"targetId": source_id, "data": "after"}))["code"], 0);
    assert_eq!(next_json(&mut incoming).await["data"], "before");
    assert_eq!(next_json(&mut incoming).await["data"], "after");

    assert_eq!(a.change_session_id(None).await.unwrap().as_deref(), Some("shared-1"));
    assert_eq!(a.whoami().await.unwrap()["username"], Value::Null);
    let extra = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
    assert!(extra.is_err(), "nothing repeated: {extra:?}");
}

/// Through a proxy that drops one response in five (sends, syncs, opens alike), 300
/// numbered messages from one client to another arrive exactly once each, in order, and
/// every send gets its own response.
///
/// Which responses are dropped is scrambled, not every fifth: with a fixed period, a
/// poller that retries every 16 ms while the sender answers four sends in between lands
/// on the dropped slot every time, and runs out of retries (seen once in CI).
#[tokio::test]
async fn dropped_responses_lose_and_repeat_nothing() {
    let server = Server::start(NO_EVENTS);
    let proxy = FaultProxy::start(server.addr, drop_when(|n| splitmix64(n).is_multiple_of(5))).await;
    let through = |_| builder(proxy.addr).max_retries(8).poll_wait(Duration::from_millis(500));
    let (a, mut a_closes) = with_close_log(through(())).await;
    let (b, mut b_closes) = with_close_log(through(())).await;
    a.login("guest", "guest").await.unwrap();
    let mut incoming = b.incoming().unwrap();
    let target = b.source_id();
    const N: i64 = 300;
    let pending: Vec<_> = (0..N).map(|i| a.send_token(&send_to(&target, json!(i), i))).collect();
    for (i, reply) in futures_util::future::join_all(pending).await.into_iter().enumerate() {
        let reply: Value = serde_json::from_str(&reply.unwrap()).unwrap();
        assert_eq!((reply["code"].as_i64(), reply["utid"].as_i64()), (Some(0), Some(i as i64)), "{reply}");
    }
    let mut received = Vec::new();
    while received.len() < N as usize {
        received.push(next_json(&mut incoming).await["data"].as_i64().unwrap());
    }
    assert_eq!(received, (0..N).collect::<Vec<_>>());
    let extra = tokio::time::timeout(Duration::from_millis(700), incoming.next()).await;
    assert!(extra.is_err(), "a message came twice: {extra:?}");
    // The sends alone make at least N responses, so at least N / 5 were dropped.
    let dropped = proxy.count(|c| &c.dropped);
    assert!(dropped >= N as u64 / 5, "the proxy dropped only {dropped} responses");
    assert!(a_closes.try_recv().is_err() && b_closes.try_recv().is_err(), "a session closed");
    eprintln!("{dropped} responses dropped");
}

/// The first responses of a session lost one after another (open, first sync, login): each
/// retry lands where it should; the login does not run twice (a second one would answer
/// `is authenticated`).
#[tokio::test]
async fn lost_responses_to_open_sync_and_login_are_retried_safely() {
    let server = Server::start(NO_EVENTS);
    // Without a back channel the pipeline makes every request: open 1 (lost), open 2
    // ("Invalid connection state!": the first went through), sync 3 (lost), sync 4, login 5
    // (lost), login 6 (the stored response).
    let proxy = FaultProxy::start_recording(server.addr, drop_when(|n| [1, 3, 5].contains(&n))).await;
    let id = "5eb63bbbe01eeed093cb22bb8f5acdc3";
    let a = builder(proxy.addr).connection_id(id).backchannel(false).connect().await.unwrap();
    assert_eq!(a.welcome()["type"], "welcome");
    assert_eq!(a.login("guest", "guest").await.unwrap()["username"], "guest");
    assert_eq!(proxy.count(|c| &c.dropped), 3);
    assert_eq!(a.whoami().await.unwrap()["username"], "guest");

    // Secrets stay out of request targets: the id travels in its header only.
    let sent = String::from_utf8_lossy(&proxy.requests.lock().unwrap()).into_owned();
    // Bodies have no line end: find request lines by their method.
    let targets: Vec<&str> =
        sent.match_indices("POST /").map(|(i, _)| &sent[i..i + sent[i..].find("\r\n").unwrap()]).collect();
    assert_eq!(targets.len(), 7, "{targets:?}");
    assert!(!sent.contains("GET /"), "every action is a POST");
    assert!(targets.iter().all(|t| !t.contains(id) && !t.contains("password")), "{targets:?}");
    assert_eq!(sent.matches(&format!("x-pollgate-connection: {id}\r\n")).count(), 7);
}

/// Dropping every handle closes the connector on the server.
#[tokio::test]
async fn dropping_the_last_handle_closes_the_connector() {
    let server = Server::start(NO_EVENTS);
    let raw = server.client();
    let (a, mut closes) = with_close_log(builder(server.addr).connection_id(raw.connection_id.clone())).await;
    assert_eq!(raw.post(&[("action", "whoami")]).status, 200, "the raw client shares the connector");
    let clone = a.clone();
    drop(a);
    assert!(!clone.is_closed(), "a clone keeps the session");
    drop(clone);
    let reason = tokio::time::timeout(Duration::from_secs(10), closes.recv()).await.expect("closed in time");
    assert_eq!(reason, Some(CloseReason::Dropped));
    assert_eq!(raw.post(&[("action", "whoami")]).status, 411, "the server forgot the connector");
}

/// A server that is gone: the request fails once its retries are exhausted and the session
/// closes with that error.
#[tokio::test]
async fn exhausted_retries_close_the_session() {
    let mut server = Server::start(NO_EVENTS);
    let b = builder(server.addr).backchannel(false).max_retries(2);
    let (a, mut closes) = with_close_log(b).await;
    server.kill();
    let result = a.whoami().await;
    assert!(
        matches!(&result, Err(Error::RetriesExhausted(last)) if matches!(**last, Error::Transport(_))),
        "{result:?}"
    );
    let reason = closes.recv().await.unwrap();
    assert_eq!(reason, CloseReason::Failed(Box::new(result.unwrap_err())));
    assert!(a.is_closed());
}
