//! Part B's queue extensions: long-poll, acknowledged sync, idempotent send, concurrent syncs.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn echo(text: &str) -> serde_json::Value {
    json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": text})
}

/// A held sync returns as soon as a packet is queued for it, not at the end of its wait.
#[test]
fn held_sync_wakes_on_a_queued_packet() {
    let server = Server::start(NO_EVENTS);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = b.get("action=sync&wait=20000");
            (r, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": b_id, "data": "wake"});
    assert_eq!(a.send(&token).json()["code"], 0);
    let (r, elapsed) = waiter.join().unwrap();
    let packets = r.packets();
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert!(packets[0].contains(r#""data":"wake""#));
    assert!(elapsed < Duration::from_secs(15), "woke at the end of the wait, not on the packet");
}

/// A sync with wait and nothing queued answers `[]` when the wait ends.
#[test]
fn held_sync_ends_empty_after_its_wait() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let start = Instant::now();
    let r = c.get("action=sync&wait=300");
    assert_eq!(r.text(), "[]");
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(r.header("x-pollgate-seq"), Some("1"), "the welcome (seq 1) was delivered");
}

/// A close while a sync is held answers it at once with the close command.
#[test]
fn held_sync_answers_on_close() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.get("action=sync&wait=20000"))
    };
    std::thread::sleep(Duration::from_millis(300));
    c.send(&json!({"ns": "org.jwebsocket.plugins.system", "type": "close"}));
    let r = waiter.join().unwrap();
    assert_eq!(r.packets(), vec!["http.command.close".to_owned()]);
    assert_eq!(r.header("x-pollgate-close-reason"), Some("client"));
}

/// With ack, packets are numbered 1, 2, 3…; a lost response is asked for again and nothing
/// is lost or repeated.
#[test]
fn acknowledged_sync_redelivers_until_acknowledged() {
    let server = Server::start(&[]);
    let c = server.client();
    c.get("action=open");
    // Two more packets: replies of echo to ourselves are bodies, so use a session copy: send
    // to self with the body taken by the forward, the std reply queued.
    let me = pollgate::protocol::connector_id(&c.connection_id, "127.0.0.1");
    c.login("guest", "guest");
    for i in 0..2 {
        let t = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": me, "data": i, "responseRequested": true});
        c.send(&t);
    }
    // Queue: 1 welcome, 2 reply of send 0, 3 reply of send 1.
    let first = c.get("action=sync&ack=0");
    assert_eq!(first.header("x-pollgate-seq"), Some("3"));
    assert_eq!(first.packets().len(), 3);
    // The response is "lost": the same ack gets the same packets again.
    let again = c.get("action=sync&ack=0");
    assert_eq!(again.packets(), first.packets());
    let partial = c.get("action=sync&ack=2");
    assert_eq!(partial.packets(), first.packets()[2..].to_vec());
    assert_eq!(partial.header("x-pollgate-seq"), Some("3"));
    let done = c.get("action=sync&ack=3");
    assert_eq!((done.text().as_str(), done.header("x-pollgate-seq")), ("[]", Some("3")));
    let r = c.get("action=sync&ack=9");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("'ack'"), "{}", r.text());
    let r = c.get("action=sync&ack=x");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid 'ack' parameter value!"));
}

/// A send with seq runs once: a retry returns the stored response and queues nothing new.
#[test]
fn idempotent_send_runs_once() {
    let server = Server::start(NO_EVENTS);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");
    let token =
        json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": b_id, "data": "once", "utid": 1});
    let first = a.get(&format!("action=send&seq=1&data={token}"));
    let retry = a.get(&format!("action=send&seq=1&data={token}"));
    assert_eq!(first.text(), retry.text());
    assert_eq!(first.json()["code"], 0);
    assert_eq!(b.sync().packets().len(), 1, "the target got the message once");
    let next = a.get(&format!("action=send&seq=2&data={}", echo("two")));
    assert_eq!(next.json()["data"], "two");
    let old = a.get(&format!("action=send&seq=1&data={}", echo("changed")));
    assert_eq!(old.text(), first.text(), "an old seq returns its own stored response");
    let r = a.get(&format!("action=send&seq=-1&data={}", echo("x")));
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid 'seq' parameter value!"));
}

/// A newer sync on the same connector makes the held one answer `[]` at once (decision: the
/// newest poll wins, as a client that lost its poll's response re-polls), and nothing is lost.
#[test]
fn second_concurrent_sync_supersedes_the_first() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let first = {
        let c = c.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            (c.get("action=sync&wait=20000"), start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let second = {
        let c = c.clone();
        std::thread::spawn(move || c.get("action=sync&wait=1000"))
    };
    let (r1, elapsed) = first.join().unwrap();
    assert_eq!(r1.text(), "[]");
    assert!(elapsed < Duration::from_secs(10), "the first poll was released early");
    let r2 = second.join().unwrap();
    assert_eq!(r2.status, 200);
}

/// The wait is capped by max_sync_wait.
#[test]
fn wait_is_capped_by_max_sync_wait() {
    let server = Server::start(&[("MAX_SYNC_WAIT", "200")]);
    let c = server.client();
    c.open();
    let start = Instant::now();
    assert_eq!(c.get("action=sync&wait=60000").text(), "[]");
    assert!(start.elapsed() < Duration::from_secs(10));
    let r = c.get("action=sync&wait=soon");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid 'wait' parameter value!"));
}

/// A sync with wait for a connector that does not exist answers `[]` at once.
#[test]
fn unknown_connector_sync_does_not_wait() {
    let server = Server::start(&[]);
    let c = server.client();
    let start = Instant::now();
    let r = c.get("action=sync&wait=20000");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert!(start.elapsed() < Duration::from_secs(10), "held for {:?}", start.elapsed());
}
