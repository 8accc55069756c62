//! Sessions, the reaper and the limits: inactivity timeout, admission, bounded queues.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// An idle session's connectors are closed after `timeout`, with the close command queued.
#[test]
fn reaper_closes_idle_connectors() {
    // A 3 s timeout: the reaper (a pass every 750 ms) closes it between 3 and 3.75 s, and the
    // closed connector keeps its queue for another timeout (until 6 s at least). Looking at
    // 4.8 s leaves a second either side on a loaded machine; any earlier sync would count as
    // activity and push the deadline.
    let server = Server::start(&[("TIMEOUT", "0.05")]);
    let c = server.client();
    c.open();
    std::thread::sleep(Duration::from_millis(4800));
    let r = c.sync();
    assert_eq!(r.packets(), vec!["http.command.close".to_owned()]);
    assert_eq!(r.header("x-pollgate-close-reason"), Some("timeout"));
    let r = c.get("action=whoami");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    // The close was delivered: the connector is gone and the id opens again.
    c.open();
}

/// Activity pushes the deadline: a client that keeps talking is never force-closed.
#[test]
fn activity_keeps_a_session_alive() {
    let server = Server::start(&[("TIMEOUT", "0.02")]);
    let c = server.client();
    c.open();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        let r = c.get("action=active");
        assert_eq!(r.status, 204);
    }
    assert_eq!(c.sync().text(), "[]");
}

/// Activity on one connector of a shared session keeps its other connectors open.
#[test]
fn shared_session_activity_counts_for_all_its_connectors() {
    let server = Server::start(&[("TIMEOUT", "0.02")]);
    let (a, b) = (server.client(), server.client());
    a.open_with("&sessionId=s");
    b.open_with("&sessionId=s");
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(a.get("action=active").status, 204);
    }
    assert_eq!(b.get("action=active").status, 204, "b is still open");
}

/// reject: a full server answers open with 503.
#[test]
fn maxconnections_reject() {
    let server = Server::start(&[("MAXCONNECTIONS", "2")]);
    server.client().open();
    server.client().open();
    let r = server.client().get("action=open");
    assert_eq!((r.status, r.text().as_str()), (503, "Too many connections!"));
}

/// close: the least recently active connector is evicted and told so.
#[test]
fn maxconnections_close_evicts_the_least_recent() {
    let server = Server::start(&[("MAXCONNECTIONS", "2"), ("ONMAXCONNECTIONS", "close")]);
    let (old, recent, new) = (server.client(), server.client(), server.client());
    old.open();
    std::thread::sleep(Duration::from_millis(20));
    recent.open();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(new.get("action=open").status, 200);
    let r = old.sync();
    assert!(r.packets().contains(&"http.command.close".to_owned()), "{}", r.text());
    assert_eq!(r.header("x-pollgate-close-reason"), Some("evicted"));
    assert_eq!(recent.get("action=active").status, 204, "the more recent one stays");
}

/// A connector whose queue would overflow is closed with reason `queue overflow`; it keeps
/// what fit, and the sender is neither blocked nor failed.
#[test]
fn queue_overflow_closes_the_receiver_not_the_sender() {
    let server = Server::start(&[("MAX_QUEUE_PACKETS", "3"), ("BROADCAST_OPEN_EVENT", "false")]);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");
    for i in 0..6 {
        let t = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": b_id, "data": i});
        let r = a.send(&t);
        assert_eq!(r.status, 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = b.sync();
    let packets = r.packets();
    assert_eq!(packets.len(), 4, "three that fit, then the close: {packets:?}");
    assert_eq!(packets[3], "http.command.close");
    assert_eq!(r.header("x-pollgate-close-reason"), Some("queue overflow"));
    assert_eq!(a.get("action=active").status, 204, "the sender is untouched");
}
