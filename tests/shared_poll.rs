//! The shared poll (docs/PROTOCOL.md, "Shared poll"): one held sync carrying several
//! connectors of one client, each with its own `ack`, against the real server.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const SYSTEM: &str = "org.jwebsocket.plugins.system";

/// A logged-in sender and `n` receivers, opened with their welcome delivered (acked at 1).
fn setup(server: &Server, n: usize) -> (Client, Vec<(Client, String)>) {
    let sender = server.client();
    sender.open();
    assert_eq!(sender.login("guest", "guest")["code"], 0);
    let receivers = (0..n)
        .map(|_| {
            let c = server.client();
            let id = c.open();
            (c, id)
        })
        .collect();
    (sender, receivers)
}

fn send_to(sender: &Client, target: &str, data: &str) {
    let token = json!({"ns": SYSTEM, "type": "send", "targetId": target, "responseRequested": false, "data": data});
    let r = sender.post(&[("action", "send"), ("data", &token.to_string())]);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The `data` of each packet of one carried connector.
fn data(entry: &Value) -> Vec<String> {
    let packets = entry["packets"].as_array().unwrap();
    packets
        .iter()
        .map(|p| {
            let t: Value = serde_json::from_str(p.as_str().unwrap()).unwrap_or(Value::Null);
            t["data"].as_str().unwrap_or(p.as_str().unwrap()).to_owned()
        })
        .collect()
}

/// One held poll carries three connectors: it counts as one held poll, wakes for a packet of
/// any of them, and answers each with its own packets and sequence number.
#[test]
fn one_held_poll_wakes_for_any_of_its_connectors() {
    let server = Server::start(NO_EVENTS);
    let (sender, receivers) = setup(&server, 3);
    let addr = server.addr;
    let by = receivers[0].0.clone();
    let all: Vec<(Client, u64)> = receivers.iter().map(|(c, _)| (c.clone(), 1)).collect();
    let poll = std::thread::spawn(move || {
        let refs: Vec<(&Client, u64)> = all.iter().map(|(c, a)| (c, *a)).collect();
        let start = Instant::now();
        (shared_poll(addr, &by, &refs, 25_000), start.elapsed())
    });
    // Held: one poll for the three connectors.
    let start = Instant::now();
    while server.metric("pollgate_held_polls") != 1.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the poll was never held");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_to(&sender, &receivers[2].1, "for the third");
    let (r, took) = poll.join().unwrap();
    assert!(took < Duration::from_secs(20), "woken by the packet, not by the end of the wait");
    let got = carried(&r);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], json!({"seq": 1, "packets": []}));
    assert_eq!(got[1], json!({"seq": 1, "packets": []}));
    assert_eq!(data(&got[2]), vec!["for the third"]);
    assert_eq!(got[2]["seq"], 2);
    assert!(r.header("x-pollgate-seq").is_none(), "sequence numbers are per connector, in the body");
}

/// A lost answer loses nothing: the same acks get the same packets again; a higher ack
/// removes them, for that connector alone.
#[test]
fn packets_stay_until_each_connector_acknowledges_them() {
    let server = Server::start(NO_EVENTS);
    let (sender, receivers) = setup(&server, 2);
    let (a, b) = (&receivers[0], &receivers[1]);
    send_to(&sender, &a.1, "a1");
    send_to(&sender, &a.1, "a2");
    send_to(&sender, &b.1, "b1");
    let first = carried(&shared_poll(server.addr, &a.0, &[(&a.0, 1), (&b.0, 1)], 0));
    let again = carried(&shared_poll(server.addr, &a.0, &[(&a.0, 1), (&b.0, 1)], 0));
    assert_eq!(first, again, "asked again with the same acks: the same answer");
    assert_eq!((data(&first[0]), first[0]["seq"].as_u64()), (vec!["a1".to_owned(), "a2".to_owned()], Some(3)));
    assert_eq!((data(&first[1]), first[1]["seq"].as_u64()), (vec!["b1".to_owned()], Some(2)));
    // a acknowledges everything, b nothing new.
    let next = carried(&shared_poll(server.addr, &a.0, &[(&a.0, 3), (&b.0, 1)], 0));
    assert_eq!(next[0], json!({"seq": 3, "packets": []}));
    assert_eq!(data(&next[1]), vec!["b1"]);
    // b's own plain acknowledged sync sees the same packet: sharing changes nothing of it.
    let own = b.0.get("action=sync&ack=1");
    assert_eq!(own.header("x-pollgate-seq"), Some("2"));
    assert_eq!(own.packets().len(), 1);
}

/// Malformed or oversized `share` parameters are refused with a clear 400 before anything is
/// read, so the connectors keep their packets.
#[test]
fn bad_share_parameters_are_refused_and_drain_nothing() {
    let server = Server::start(NO_EVENTS);
    let (sender, receivers) = setup(&server, 1);
    let (c, id) = &receivers[0];
    send_to(&sender, id, "kept");
    let one = |ack: u64| json!([{"connectionId": c.connection_id, "ack": ack}]).to_string();
    let many: Vec<Value> = (0..65).map(|i| json!({"connectionId": format!("c{i}"), "ack": 0})).collect();
    let twice = json!([{"connectionId": c.connection_id, "ack": 1}, {"connectionId": c.connection_id, "ack": 1}]);
    let cases: Vec<(String, &str)> = vec![
        ("action=sync&share=nonsense".into(), "expected a JSON array"),
        (format!("action=sync&share={}", enc(r#"[{"connectionId":"x"}]"#)), "expected a JSON array"),
        (format!("action=sync&share={}", enc(r#"[{"connectionId":"x","ack":"1"}]"#)), "expected a JSON array"),
        ("action=sync&share=".into(), "expected a JSON array"),
        ("action=sync&share=%5B%5D".into(), "no connector"),
        (format!("action=sync&share={}", enc(&Value::Array(many).to_string())), "more than 64 connectors"),
        (format!("action=sync&share={}", enc(&twice.to_string())), "given twice"),
        (format!("action=sync&ack=1&share={}", enc(&one(1))), "'ack' goes with each connector"),
        (format!("action=sync&wait=x&share={}", enc(&one(1))), "Invalid 'wait' parameter value!"),
    ];
    for (body, expected) in &cases {
        let r = shared_poll_raw(server.addr, c, body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(expected), "{body}: {}", r.text());
    }
    // In the URL: refused, whatever the body says.
    let target = format!("{ENDPOINT}?share={}", enc(&one(1)));
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("X-Pollgate-Connection", &c.connection_id)];
    let r = post_with(server.addr, &target, &headers, b"action=sync");
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid 'share' parameter value: connection ids go in a POST body, not in the URL!".into())
    );
    // Nothing was drained: the packet is still there.
    let got = carried(&shared_poll(server.addr, c, &[(c, 1)], 0));
    assert_eq!(data(&got[0]), vec!["kept"]);
}

/// A connector the poll cannot prove (a connection id never opened, or one opened from
/// another address: a connector id is derived from both) is answered `unknown` at once; the
/// others' packets come with it, unharmed, and no other connector is touched.
#[test]
fn unknown_and_other_clients_connectors_are_answered_unknown() {
    let server = Server::start(NO_EVENTS);
    let (sender, receivers) = setup(&server, 1);
    let (mine, my_id) = &receivers[0];
    send_to(&sender, my_id, "mine");
    let never = server.client();
    // Another client, at another address, with a packet of its own.
    let other = server.client();
    let other_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let open = format!(
        "GET {ENDPOINT}?connectionId={}&action=open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        other.connection_id
    );
    assert_eq!(raw_from(other_ip, server.addr, open.as_bytes()).status, 200);
    let start = Instant::now();
    let r = shared_poll(server.addr, mine, &[(mine, 1), (&never, 0), (&other, 0)], 20_000);
    assert!(start.elapsed() < Duration::from_secs(15), "answered at once");
    let got = carried(&r);
    assert_eq!(data(&got[0]), vec!["mine"]);
    assert_eq!(got[1], json!({"seq": 0, "packets": [], "state": "unknown"}));
    assert_eq!(got[2], json!({"seq": 0, "packets": [], "state": "unknown"}));
    // The other client's welcome is still queued for it, at its own address.
    let sync = format!(
        "GET {ENDPOINT}?connectionId={}&action=sync&ack=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        other.connection_id
    );
    let theirs = raw_from(other_ip, server.addr, sync.as_bytes());
    assert_eq!(theirs.packets().len(), 1, "{}", theirs.text());
    assert!(theirs.packets()[0].contains("welcome"));
}

/// A connector carried by two polls belongs to the newest: the older answers at once with
/// it marked `superseded` (nothing drained for it) and the packets of the others; a plain
/// sync of the connector takes it over the same way.
#[test]
fn the_newest_poll_of_a_connector_wins() {
    let server = Server::start(NO_EVENTS);
    let (sender, receivers) = setup(&server, 3);
    let [(a, _), (b, b_id), (c, _)] = &receivers[..] else { unreachable!() };
    let addr = server.addr;
    let (a1, b1) = (a.clone(), b.clone());
    let older = std::thread::spawn(move || shared_poll(addr, &a1, &[(&a1, 1), (&b1, 1)], 25_000));
    std::thread::sleep(Duration::from_millis(400));
    let (b2, c2) = (b.clone(), c.clone());
    let newer = std::thread::spawn(move || shared_poll(addr, &c2, &[(&b2, 1), (&c2, 1)], 25_000));
    let got = carried(&older.join().unwrap());
    assert_eq!(got[0], json!({"seq": 1, "packets": []}));
    assert_eq!(got[1]["state"], "superseded");
    std::thread::sleep(Duration::from_millis(400));
    send_to(&sender, b_id, "to the newer");
    let got = carried(&newer.join().unwrap());
    assert_eq!(data(&got[0]), vec!["to the newer"]);
    // A plain sync takes a connector from a shared poll.
    let (b3, c3) = (b.clone(), c.clone());
    let shared = std::thread::spawn(move || shared_poll(addr, &c3, &[(&b3, 2), (&c3, 1)], 25_000));
    std::thread::sleep(Duration::from_millis(400));
    let plain = std::thread::spawn({
        let b = b.clone();
        move || b.get("action=sync&ack=2&wait=300")
    });
    let got = carried(&shared.join().unwrap());
    assert_eq!(got[0]["state"], "superseded");
    assert_eq!(plain.join().unwrap().text(), "[]");
}

/// A carried connector closed while the poll is held ends it with its close command and
/// reason; an `ack` beyond a connector's numbering is answered for that connector alone.
#[test]
fn close_and_ack_ahead_are_answered_per_connector() {
    let server = Server::start(NO_EVENTS);
    let (_, receivers) = setup(&server, 2);
    let [(a, _), (b, _)] = &receivers[..] else { unreachable!() };
    let addr = server.addr;
    let (a1, b1) = (a.clone(), b.clone());
    let poll = std::thread::spawn(move || shared_poll(addr, &a1, &[(&a1, 1), (&b1, 1)], 25_000));
    std::thread::sleep(Duration::from_millis(400));
    b.send(&json!({"ns": SYSTEM, "type": "close"}));
    let got = carried(&poll.join().unwrap());
    assert_eq!(got[0], json!({"seq": 1, "packets": []}));
    assert_eq!(got[1], json!({"seq": 2, "packets": ["http.command.close"], "close": "client"}));
    // An ack ahead of a's numbering: a is refused, nothing removed; b's close still comes.
    let got = carried(&shared_poll(addr, a, &[(a, 9), (b, 1)], 0));
    assert_eq!(got[0], json!({"seq": 1, "packets": [], "state": "ack-ahead"}));
    assert_eq!(got[1]["packets"], json!(["http.command.close"]));
    // Acknowledging the close command lets b go; a is still there.
    let got = carried(&shared_poll(addr, a, &[(a, 1), (b, 2)], 0));
    assert_eq!(got[0], json!({"seq": 1, "packets": []}));
    assert_eq!(a.get("action=active").status, 204);
    assert_eq!(b.get("action=active").status, 400, "b is gone");
}

/// With nothing to say, the poll answers when its wait ends, every connector empty, and it
/// counts as activity of each connector.
#[test]
fn an_idle_shared_poll_ends_with_its_wait() {
    let server = Server::start(NO_EVENTS);
    let (_, receivers) = setup(&server, 2);
    let [(a, _), (b, _)] = &receivers[..] else { unreachable!() };
    let start = Instant::now();
    let got = carried(&shared_poll(server.addr, a, &[(a, 1), (b, 1)], 300));
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(got, vec![json!({"seq": 1, "packets": []}), json!({"seq": 1, "packets": []})]);
    assert_eq!(server.metric("pollgate_held_polls"), 0.0, "no poll is held any more");
}
