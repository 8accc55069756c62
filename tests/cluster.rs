//! A cluster: three pollgate nodes sharing a real `redis-server`, behind a real `nginx` that
//! round-robins every request with no stickiness, all on loopback.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::{Client, Response};

const SYSTEM: &str = "org.jwebsocket.plugins.system";

/// The same connection id, speaking to another address.
fn via(client: &Client, addr: SocketAddr) -> Client {
    Client { addr, connection_id: client.connection_id.clone() }
}

fn parse(packets: &[String]) -> Vec<Value> {
    packets.iter().map(|p| serde_json::from_str(p).unwrap_or(Value::String(p.clone()))).collect()
}

fn send_to(target: &str, data: &str) -> Value {
    json!({"ns": SYSTEM, "type": "send", "targetId": target, "responseRequested": false, "data": data})
}

/// Login, storage, queues and close made on one node hold on every other; the protocol works
/// through the balancer.
#[test]
fn every_request_of_a_connector_may_land_on_any_node() {
    let c = Cluster::start(&[]);
    let alice = Client::new(c.nodes[0].addr);
    let alice_id = alice.open();
    let on = |i: usize| via(&alice, c.nodes[i].addr);
    assert_eq!(on(1).login("guest", "guest")["code"], 0);
    let r = on(2).send(&json!({"ns": SYSTEM, "type": "getAuthorities", "utid": 2}));
    assert_eq!(r.json()["username"], "guest", "the login made on node 1 is seen on node 2");
    // Session storage written on one node, read on another.
    on(0).system("sessionPut", json!({"key": "color", "value": "blue", "utid": 3}));
    let got = on(1).system("sessionGet", json!({"key": "color", "utid": 4}));
    assert_eq!(got["data"]["value"], "blue", "{got}");
    // A packet queued through node 2 is delivered by node 0.
    let bob = Client::new(c.nodes[1].addr);
    let bob_id = bob.open();
    on(2).send(&send_to(&bob_id, "hello"));
    let got = parse(&via(&bob, c.nodes[0].addr).get("action=sync&wait=5000").packets());
    assert_eq!(got[0]["data"], "hello");
    assert_eq!(got[0]["sourceId"], alice_id.as_str());
    // Through the balancer, with no stickiness: the whole protocol works.
    let carol = c.client();
    carol.open();
    assert_eq!(carol.login("guest", "guest")["code"], 0);
    for i in 0..6 {
        let r = carol.send(&json!({"ns": SYSTEM, "type": "echo", "data": format!("e{i}"), "utid": i}));
        assert_eq!(r.json()["data"], format!("e{i}"));
    }
    let r = carol.get("action=close");
    assert_eq!(r.status, 200);
    for node in &c.nodes {
        let r = via(&carol, node.addr).send(&json!({"ns": SYSTEM, "type": "echo", "data": "x"}));
        assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"), "closed on every node");
    }
}

/// A node's cached rights follow a login and a logout made on other nodes: the next send
/// through it is allowed, then denied, and a denied `seq` is answered the same on retry.
#[test]
fn a_login_on_one_node_is_honoured_by_the_rights_check_of_another() {
    let c = Cluster::start(&[]);
    let alice = Client::new(c.nodes[0].addr);
    let alice_id = alice.open();
    let on = |i: usize| via(&alice, c.nodes[i].addr);
    let to_self = |utid: u64| json!({"ns": SYSTEM, "type": "send", "targetId": alice_id, "data": "d", "utid": utid});
    let verdict = |r: Response| {
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        match body["type"].as_str() {
            Some("send") => "allowed".to_owned(),
            _ => body["msg"].as_str().unwrap_or_default().to_owned(),
        }
    };
    // Node 1 decides (and caches) the rights of a session nobody logged in to.
    assert_eq!(verdict(on(1).send(&to_self(1))), "access denied");
    assert_eq!(on(2).login("guest", "guest")["code"], 0);
    assert_eq!(verdict(on(1).send(&to_self(2))), "allowed", "the login on node 2 is seen by node 1");
    assert_eq!(verdict(on(1).send(&to_self(3))), "allowed");
    let r = on(0).send(&json!({"ns": SYSTEM, "type": "logout", "utid": 4}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdict(on(1).send(&to_self(5))), "access denied", "the logout on node 0 is seen by node 1");
    // A denied idempotent send records its answer: a retry on any node gets the same.
    let query = format!("action=send&seq=1&data={}", to_self(6));
    let first = on(1).get(&query);
    assert_eq!(first.json()["msg"], "access denied", "{}", first.text());
    let again = on(2).get(&query);
    assert_eq!((again.status, again.body), (first.status, first.body));
}

/// A packet queued through one node ends a poll held on another long before its wait.
#[test]
fn a_poll_held_on_one_node_wakes_for_a_packet_queued_on_another() {
    let c = Cluster::start(&[]);
    let (receiver, receiver_id, sender, _) = receiver_and_guest_sender(&c);
    let held = via(&receiver, c.nodes[2].addr);
    let poll = std::thread::spawn(move || {
        let start = Instant::now();
        let r = held.get("action=sync&wait=25000");
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    sender.send(&send_to(&receiver_id, "wake"));
    let (r, took) = poll.join().unwrap();
    assert_eq!(parse(&r.packets())[0]["data"], "wake");
    // Without the cross-node wake-up it would have answered only at the end of its wait.
    assert!(took < Duration::from_secs(20), "the poll was not woken: {took:?}");
}

/// A shared poll held on one node wakes for a packet queued through another, for whichever
/// of its connectors (opened on other nodes) the packet is; a newer shared poll on a third
/// node takes the connectors over.
#[test]
fn a_shared_poll_on_one_node_wakes_for_sends_on_another() {
    let c = Cluster::start(&[]);
    let (first, first_id, sender, _) = receiver_and_guest_sender(&c);
    let second = Client::new(c.nodes[1].addr);
    let second_id = second.open();
    // Both connectors carried by one poll on node 2, with the welcome acknowledged.
    let poll_on = |node: usize, acks: (u64, u64)| {
        let (addr, a, b) = (c.nodes[node].addr, first.clone(), second.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            (support::shared_poll(addr, &a, &[(&a, acks.0), (&b, acks.1)], 25_000), start.elapsed())
        })
    };
    let poll = poll_on(2, (1, 1));
    std::thread::sleep(Duration::from_millis(500));
    sender.send(&send_to(&second_id, "to the second"));
    let (r, took) = poll.join().unwrap();
    assert!(took < Duration::from_secs(20), "the shared poll was not woken: {took:?}");
    let got = support::carried(&r);
    assert_eq!(got[0]["packets"], json!([]));
    assert_eq!(
        parse(&serde_json::from_value::<Vec<String>>(got[1]["packets"].clone()).unwrap())[0]["data"],
        "to the second"
    );
    assert_eq!(got[1]["seq"], 2);
    // A newer shared poll on another node supersedes the one held, for both connectors at
    // once (the older one is woken only when both are taken), again and again; the last one
    // gets the next packet.
    let mut older = poll_on(2, (1, 2));
    for node in [0, 1, 2, 0, 1, 2, 0] {
        std::thread::sleep(Duration::from_millis(500));
        let newer = poll_on(node, (1, 2));
        let (r, took) = older.join().unwrap();
        assert!(took < Duration::from_secs(20), "not superseded: {took:?}");
        let got = support::carried(&r);
        let states = (got[0]["state"].as_str(), got[1]["state"].as_str());
        assert_eq!(states, (Some("superseded"), Some("superseded")), "taken over on node {node}");
        older = newer;
    }
    let newer = older;
    std::thread::sleep(Duration::from_millis(300));
    sender.send(&send_to(&first_id, "to the first"));
    let got = support::carried(&newer.join().unwrap().0);
    assert_eq!(
        parse(&serde_json::from_value::<Vec<String>>(got[0]["packets"].clone()).unwrap())[0]["data"],
        "to the first"
    );
    assert_eq!(got[1], json!({"seq": 2, "packets": []}));
}

/// A newer sync makes the held one answer `[]` at once, whether it lands on the held one's
/// node (which wakes its own poll itself) or on another (woken through Redis); the newer one
/// then holds until its packet comes.
#[test]
fn a_newer_sync_supersedes_a_held_one_on_its_node_or_another() {
    let c = Cluster::start(&[]);
    let (receiver, receiver_id, sender, _) = receiver_and_guest_sender(&c);
    for (first, second) in [(0, 0), (0, 1)] {
        let held = via(&receiver, c.nodes[first].addr);
        let poll = std::thread::spawn(move || {
            let start = Instant::now();
            (held.get("action=sync&wait=25000"), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let newer = via(&receiver, c.nodes[second].addr);
        let newer_poll = std::thread::spawn(move || newer.get("action=sync&wait=25000"));
        let (r, took) = poll.join().unwrap();
        assert_eq!(r.text(), "[]", "node {first} then {second}");
        assert!(took < Duration::from_secs(20), "node {first} then {second}: not superseded: {took:?}");
        std::thread::sleep(Duration::from_millis(300));
        let data = format!("after {first}, {second}");
        sender.send(&send_to(&receiver_id, &data));
        assert_eq!(parse(&newer_poll.join().unwrap().packets())[0]["data"], data.as_str());
    }
}

/// getClients lists and broadcast reaches connectors whatever node they use.
#[test]
fn broadcast_and_get_clients_see_every_connector_of_the_cluster() {
    let c = Cluster::start(&[]);
    let receivers: Vec<(Client, String)> = (0..3)
        .map(|i| {
            let r = Client::new(c.nodes[i].addr);
            let id = r.open();
            (r, id)
        })
        .collect();
    let sender = c.client();
    let sender_id = sender.open();
    sender.login("guest", "guest");
    let clients = sender.system("getClients", json!({"utid": 1}));
    let listed: Vec<String> =
        clients["clients"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    for (_, id) in &receivers {
        assert!(listed.iter().any(|l| l.ends_with(&format!("@{id}"))), "{id} missing from {listed:?}");
    }
    assert!(listed.iter().any(|l| l == &format!("guest@{sender_id}")), "{listed:?}");
    // Each receiver holds a poll on a different node than it opened on.
    let polls: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, (r, _))| {
            let held = via(r, c.nodes[(i + 1) % 3].addr);
            std::thread::spawn(move || held.get("action=sync&wait=20000"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    sender.system("broadcast", json!({"data": "to all", "senderIncluded": false, "responseRequested": false}));
    for p in polls {
        let got = parse(&p.join().unwrap().packets());
        assert!(got.iter().any(|t| t["data"] == "to all"), "{got:?}");
    }
}

/// Three reapers race for one expired connector: one close, one disconnect event, reason timeout.
#[test]
fn the_reaper_closes_an_idle_connector_once_whichever_nodes_run() {
    // Three reapers race for the same expired session; the disconnect event goes out once.
    let c = Cluster::start(&[("TIMEOUT", "0.05"), ("BROADCAST_CLOSE_EVENT", "true")]);
    let idle = Client::new(c.nodes[0].addr);
    let idle_id = idle.open();
    let watcher = Client::new(c.nodes[1].addr);
    watcher.open();
    let mut disconnects = 0;
    let mut closed_with = None;
    let start = Instant::now();
    // The watcher keeps itself alive by polling, through every node in turn, and goes on
    // for a while after the first disconnect event to see that no second one comes.
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(9) {
        i += 1;
        let r = via(&watcher, c.nodes[i % 3].addr).get("action=sync&wait=500");
        assert_eq!(r.status, 200, "{}", r.text());
        disconnects += parse(&r.packets())
            .iter()
            .filter(|t| t["name"] == "disconnect" && t["sourceId"] == idle_id.as_str())
            .count();
        if disconnects > 0 && closed_with.is_none() {
            // Within the retention (the timeout here), the idle client learns why.
            let r = via(&idle, c.nodes[i % 3].addr).sync();
            closed_with = Some((r.text(), r.header("x-pollgate-close-reason").map(str::to_owned)));
        }
    }
    assert_eq!(disconnects, 1, "one disconnect event for the reaped connector");
    let (body, reason) = closed_with.unwrap();
    assert!(body.contains("http.command.close"), "{body}");
    assert_eq!(reason.as_deref(), Some("timeout"));
}

/// A node stopping beside live peers closes nothing; the last one sends systemStopping and close.
#[test]
fn only_the_last_node_to_stop_closes_the_connectors() {
    let mut c = Cluster::start(&[("NOTIFY_SYSTEM_STOPPING", "true")]);
    let alice = Client::new(c.nodes[0].addr);
    alice.open();
    // Node 0 stops while the others run: alice's connector stays and hears nothing.
    let stopped = c.nodes[0].terminate(Duration::from_secs(15)).expect("node 0 exited");
    assert!(stopped.success());
    let r = via(&alice, c.nodes[1].addr).get("action=sync&ack=1");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert!(c.nodes[1].terminate(Duration::from_secs(15)).expect("node 1 exited").success());
    // Node 2 is the last one: its shutdown tells alice, in one answer to her held poll.
    let held = via(&alice, c.nodes[2].addr);
    let poll = std::thread::spawn(move || held.get("action=sync&ack=1&wait=20000"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.nodes[2].terminate(Duration::from_secs(15)).expect("node 2 exited").success());
    let r = poll.join().unwrap();
    assert_eq!(
        r.packets(),
        [r#"{"ns":"org.jwebsocket.plugins.system","type":"event","name":"systemStopping"}"#, "http.command.close"]
    );
}

/// A send whose node died mid-way waits for its lease, is then re-run elsewhere, and queues nothing twice.
#[test]
fn a_send_cut_by_a_dying_node_is_rerun_after_its_lease_without_doubling_packets() {
    let c = Cluster::start(&[]);
    let (receiver, receiver_id, sender, sender_id) = receiver_and_guest_sender(&c);
    // What a node leaves behind when it dies inside `send seq=5`, after queuing the packet
    // for the receiver and before recording the response: the claim, and the packet's once
    // key. (Written straight into Redis: the tests cannot time a kill that precisely.) Each
    // connector's keys are in its session's partition (on a Redis Cluster, one of sixteen);
    // the once key is in the receiver's, where the packet was queued.
    let (rp, sp) = (c.partition_of(&receiver_id), c.partition_of(&sender_id));
    let token = send_to(&receiver_id, "once");
    let queued = json!({"ns": SYSTEM, "type": "send", "targetId": receiver_id, "responseRequested": false,
        "data": "once", "sourceId": sender_id, "sender": "guest"});
    let pushed = c.redis.cli(&["RPUSH", &format!("{rp}q:{receiver_id}"), &queued.to_string()]);
    assert_eq!(pushed, "1", "the receiver's queue held nothing else");
    c.redis.cli(&["HINCRBY", &format!("{rp}c:{receiver_id}"), "last", "1"]);
    c.redis.cli(&["HSET", &format!("{sp}c:{sender_id}"), "sendlast", "5"]);
    let once = format!("{rp}once:{sender_id}:5");
    c.redis.cli(&["HSET", &once, &format!("1:{receiver_id}"), "1"]);
    let now = protocol_now_ms();
    // Claimed a moment ago: still its node's; the retry is told to wait.
    c.redis.cli(&["HSET", &format!("{sp}sp:{sender_id}"), "5", &now.to_string()]);
    let r = via(&sender, c.nodes[2].addr).get(&format!("action=send&seq=5&data={token}"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("in progress"), "{}", r.text());
    // Claimed longer ago than the lease (10 s): the node died; another node re-runs it.
    c.redis.cli(&["HSET", &format!("{sp}sp:{sender_id}"), "5", &(now - 11_000).to_string()]);
    let r = via(&sender, c.nodes[2].addr).get(&format!("action=send&seq=5&data={token}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = parse(&via(&receiver, c.nodes[0].addr).get("action=sync&wait=1000").packets());
    let copies = got.iter().filter(|t| t["data"] == "once").count();
    assert_eq!(copies, 1, "queued once, not again by the re-run: {got:?}");
    // Completed: its once keys are gone (on a Redis Cluster, in the receiver's partition too:
    // the node that ran the send deletes them there), and a retry is answered from the record.
    assert_eq!(c.redis.cli(&["EXISTS", &once]), "0", "{once} (receiver's partition {rp}, sender's {sp})");
    let again = via(&sender, c.nodes[0].addr).get(&format!("action=send&seq=5&data={token}"));
    assert_eq!((again.status, again.body), (r.status, r.body));
}

/// A packet Redis refuses to queue fails its send with 503, not a 200 that lost it; the retry queues it once.
#[test]
fn a_send_whose_packet_is_not_stored_is_not_acknowledged_and_its_retry_queues_it_once() {
    let c = Cluster::start(&[]);
    let (receiver, receiver_id, sender, _) = receiver_and_guest_sender(&c);
    // Queues made read-only (a Redis ACL on every instance): the push fails, every step
    // before it works. Keys are the prefix, on a Redis Cluster a partition's hash tag, then
    // a name (`q:` for queues); the bare partition prefix is granted as well.
    let p = &c.prefix;
    let writable_but_queues = [format!("%W~{p}[^q{{]*"), format!("%W~{p}{{*}}[^q]*"), format!("%W~{p}{{*}}")];
    let mut rules = vec!["ACL", "SETUSER", "default", "resetkeys", "%R~*"];
    rules.extend(writable_but_queues.iter().map(String::as_str));
    c.redis.cli_all(&rules);
    let token = json!({"ns": SYSTEM, "type": "send", "targetId": receiver_id, "data": "kept", "utid": 7});
    let query = format!("action=send&seq=1&data={token}");
    let r = sender.get(&query);
    assert_eq!(r.status, 503, "the sender's response was ready, the packet was not stored: {}", r.text());
    c.redis.cli_all(&["ACL", "SETUSER", "default", "resetkeys", "~*"]);
    // The claim was given back: the retry runs at once, on any node, and is acknowledged.
    let r = via(&sender, c.nodes[2].addr).get(&query);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["code"], 0, "{}", r.text());
    let got = parse(&receiver.get("action=sync&wait=1000").packets());
    let copies = got.iter().filter(|t| t["data"] == "kept").count();
    assert_eq!(copies, 1, "{got:?}");
}

/// A receiver opened on node 0 and a sender opened on node 1 and logged in as guest, with
/// their connector ids.
fn receiver_and_guest_sender(c: &Cluster) -> (Client, String, Client, String) {
    let receiver = Client::new(c.nodes[0].addr);
    let receiver_id = receiver.open();
    let sender = Client::new(c.nodes[1].addr);
    let sender_id = sender.open();
    sender.login("guest", "guest");
    (receiver, receiver_id, sender, sender_id)
}

fn protocol_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Sends with retries: a node may die under any request. 502/503 and dropped connections
/// are retried (the same `seq`, so a send runs once); 409 "in progress" waits for the lease.
fn send_reliably(client: &Client, seq: u64, token: &Value) -> Response {
    let start = Instant::now();
    loop {
        let query = format!("action=send&seq={seq}&data={token}");
        let r = std::panic::catch_unwind(|| client.get(&query));
        if let Ok(r) = r {
            if r.status == 200 || (r.status == 409 && r.text().contains("no longer kept")) {
                return r;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "send {seq} kept failing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 of a node during 10,000 acknowledged sends: each delivered once and in order; the node comes back.
#[test]
fn a_node_killed_mid_stream_loses_and_doubles_nothing() {
    const MESSAGES: usize = 10_000;
    let mut c = Cluster::start(&[]);
    let receiver = c.client();
    let receiver_id = receiver.open();
    let sender = c.client();
    sender.open();
    sender.login("guest", "guest");

    // The receiver acknowledges what it got; a lost answer is fetched again with the same ack.
    let done = Arc::new(AtomicBool::new(false));
    let rx = {
        let receiver = receiver.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut acked = 0u64;
            let mut got: Vec<String> = Vec::new();
            let start = Instant::now();
            while got.len() < MESSAGES && start.elapsed() < Duration::from_secs(300) {
                let query = format!("action=sync&ack={acked}&wait=2000");
                let Ok(r) = std::panic::catch_unwind(|| receiver.get(&query)) else { continue };
                if r.status != 200 {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let last: u64 = r.header("x-pollgate-seq").expect("seq header").parse().unwrap();
                for t in parse(&r.packets()) {
                    if t["type"] == "send" {
                        got.push(t["data"].as_str().unwrap().to_owned());
                    }
                }
                acked = last;
            }
            done.store(true, Ordering::SeqCst);
            got
        })
    };
    for i in 0..MESSAGES {
        if i == MESSAGES / 3 {
            // kill -9: no shutdown, no goodbye; requests in flight on it are cut.
            c.nodes[1].kill();
        }
        send_reliably(&sender, i as u64 + 1, &send_to(&receiver_id, &format!("m{i}")));
    }
    let got = rx.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    assert_eq!(got.len(), MESSAGES, "delivered {} of {MESSAGES}", got.len());
    assert!(
        got == expected,
        "order or duplicates: first difference at {:?}",
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );

    // The node comes back on its port and serves connectors it never saw.
    c.restart(1);
    let back = via(&sender, c.nodes[1].addr);
    let r = back.send(&json!({"ns": SYSTEM, "type": "echo", "data": "back", "utid": 1}));
    assert_eq!(r.json()["data"], "back");
}

/// Redis stopped: 503 with a reason, held polls answered, nothing stored; started: the same connectors go on.
#[test]
fn redis_down_means_503_with_a_reason_and_the_node_recovers_by_itself() {
    let mut c = Cluster::start(&[]);
    let alice = Client::new(c.nodes[0].addr);
    let alice_id = alice.open();
    let bob = Client::new(c.nodes[1].addr);
    bob.open();
    bob.login("guest", "guest");
    // A poll held while Redis goes away is answered, not left hanging until its wait ends.
    let held = via(&alice, c.nodes[2].addr);
    let poll = std::thread::spawn(move || {
        let start = Instant::now();
        (held.get("action=sync&ack=1&wait=25000"), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    c.redis.stop();
    let (r, took) = poll.join().unwrap();
    assert!(took < Duration::from_secs(20), "held poll not answered: {took:?}");
    assert_eq!(r.status, 503, "{}", r.text());
    for node in &c.nodes {
        let r = via(&bob, node.addr).send(&send_to(&alice_id, "while-down"));
        assert_eq!(r.status, 503);
        assert!(r.text().contains("store"), "{}", r.text());
        let r = Client::new(node.addr).get("action=open");
        assert_eq!(r.status, 503, "{}", r.text());
    }
    c.redis.restart();
    // Recovery needs no restart of the nodes, and the connectors stored before go on.
    let start = Instant::now();
    let r = loop {
        let r = via(&bob, c.nodes[0].addr).send(&send_to(&alice_id, "after"));
        if r.status == 200 || start.elapsed() > Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 200, "{}", r.text());
    // Each node reconnects on its own (its heartbeat retries every second): retry a 503.
    let r = loop {
        let r = via(&alice, c.nodes[1].addr).get("action=sync&ack=1&wait=5000");
        if r.status == 200 || start.elapsed() > Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let got = parse(&r.packets());
    let data: Vec<&str> = got.iter().filter_map(|t| t["data"].as_str()).collect();
    assert_eq!(data, ["after"], "a send refused with 503 was not queued");
}

/// On the Redis store a sync that begins wakes the older sync held on its node, and not
/// itself: its own wake-up fires for what comes after its round (a packet), not for its
/// begin. Counting its own begin, it would drain a second time for nothing (as three held
/// polls in four once did).
#[test]
fn a_sync_that_begins_wakes_the_one_held_on_its_node_and_not_itself() {
    use pollgate::metrics::StoreMeter;
    use pollgate::store::{QueueLimits, Store, Wakeup};
    use support::cluster::Redis;

    let redis = Redis::from_environment();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fired = |wakeup: &mut Wakeup, within: Duration| {
        runtime.block_on(async { tokio::time::timeout(within, wakeup.changed()).await.is_ok() })
    };
    let store = redis_store(&redis, &runtime, StoreMeter::default());
    // The node's subscription, once made, wakes every poll once (it may have missed a
    // message): wait for it, so that no wake-up below is that one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.channels("t:*n:*") < redis.partitions() {
        assert!(Instant::now() < deadline, "the store never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    runtime.block_on(store.open(connector("c1", "s1"), false, 10, "welcome".into())).unwrap();
    let first = runtime.block_on(store.poll_round("c1", None, None, 1, false)).unwrap();
    assert_eq!(first.drained.unwrap().packets.len(), 1, "the welcome");
    let mut held = runtime.block_on(store.poll_round("c1", None, Some(first.ticket), 2, true)).unwrap().wakeup;
    assert!(!fired(&mut held, Duration::ZERO), "nothing happened yet");
    let newer = runtime.block_on(store.poll_round("c1", None, None, 3, false)).unwrap();
    assert!(newer.drained.unwrap().packets.is_empty());
    let mut newer = newer.wakeup;
    assert!(fired(&mut held, Duration::ZERO), "the older sync is woken");
    assert!(!fired(&mut newer, Duration::from_millis(300)), "the newer one is not woken by its own begin");
    let limits = QueueLimits { max_packets: 10, max_bytes: 1000 };
    runtime.block_on(store.push("c1", "p".into(), limits, None)).unwrap();
    assert!(fired(&mut newer, Duration::from_secs(5)), "a packet wakes it");
}

/// A push wakes a node only while a sync waits there: a sync that answers at once clears the
/// connector's `holder`, so what is queued between two polls publishes nothing; one that
/// waits sets it, and its packet wakes it.
#[test]
fn a_push_publishes_a_wake_up_only_while_a_sync_waits() {
    use pollgate::metrics::StoreMeter;
    use pollgate::store::{QueueLimits, Store};
    use support::cluster::Redis;

    let redis = Redis::from_environment();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&redis, &runtime, StoreMeter::default());
    // Plain pub/sub on one server, sharded on a Redis Cluster.
    let publishes = || redis.calls("publish") + redis.calls("spublish");
    let holder = || redis.cli(&["HGET", &redis.key("t:", "c:c1"), "holder"]);
    let limits = QueueLimits { max_packets: 10, max_bytes: 1000 };
    let push = |text: &str| runtime.block_on(store.push("c1", text.into(), limits, None)).unwrap();
    let round = |ticket, at, waited| runtime.block_on(store.poll_round("c1", None, ticket, at, waited)).unwrap();
    let texts =
        |packets: Vec<pollgate::store::QueuedPacket>| packets.iter().map(|p| p.text.to_string()).collect::<Vec<_>>();

    runtime.block_on(store.open(connector("c1", "s1"), false, 10, "welcome".into())).unwrap();
    assert_eq!(texts(round(None, 1, false).drained.unwrap().packets), ["welcome"]);
    assert_eq!(holder(), "", "answered at once: no node holds a poll");
    let before = publishes();
    push("a");
    assert_eq!(publishes(), before, "no poll held: no wake-up sent");
    assert_eq!(texts(round(None, 2, false).drained.unwrap().packets), ["a"]);
    assert_eq!(holder(), "");

    let held = round(None, 3, false);
    assert!(held.drained.unwrap().packets.is_empty(), "nothing queued: the sync waits");
    assert_ne!(holder(), "", "the waiting sync's node is the holder");
    let mut wakeup = held.wakeup;
    push("b");
    assert_eq!(publishes(), before + 1, "the holder is woken");
    let woken = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), wakeup.changed()).await });
    assert!(woken.is_ok(), "the packet wakes the held poll");
    assert_eq!(texts(round(Some(held.ticket), 4, true).drained.unwrap().packets), ["b"]);
    assert_eq!(holder(), "", "answered: the holder is cleared");
}

/// A Redis store of its own on `redis` (prefix `t:`), as the server makes one.
fn redis_store(
    redis: &support::cluster::Redis,
    runtime: &tokio::runtime::Runtime,
    meter: pollgate::metrics::StoreMeter,
) -> std::sync::Arc<pollgate::store::redis::RedisStore> {
    let options = pollgate::store::redis::RedisOptions {
        url: redis.url(),
        cluster_nodes: redis.cluster_nodes(),
        prefix: "t:".into(),
        key_ttl_ms: 60_000,
        retention_ms: 60_000,
        touch_granularity_ms: 1_000,
        record_retention_ms: 60_000,
    };
    runtime.block_on(async { pollgate::store::redis::RedisStore::new(options, meter) }).unwrap()
}

fn connector(id: &str, session_id: &str) -> pollgate::store::ConnectorInfo {
    pollgate::store::ConnectorInfo {
        id: id.into(),
        session_id: session_id.into(),
        address: "127.0.0.1".into(),
        user_agent: String::new(),
        opened_ms: 0,
        last_active_ms: 0,
    }
}

/// On the Redis store a send's touch reads the session's rights in the same round trip: the
/// session id, and those of the keys asked for that are set; nothing for an unknown
/// connector. The request is recorded as a plain touch records it.
#[test]
fn a_touch_for_a_send_reads_the_session_keys_in_the_same_round_trip() {
    use pollgate::metrics::StoreMeter;
    use pollgate::store::Store;
    use support::cluster::Redis;

    let redis = Redis::from_environment();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let meter = StoreMeter::default();
    let store = redis_store(&redis, &runtime, meter.clone());
    // Opened now: on a Redis Cluster a node refreshes a connector's directory entry (a round
    // trip of its own, in the background) once its last refresh, at first the open, is a
    // quarter of the key expiry old; a connector opened at time 0 would count one here.
    let now = pollgate::protocol::now_ms();
    let opened = pollgate::store::ConnectorInfo { opened_ms: now, last_active_ms: now, ..connector("c1", "s1") };
    runtime.block_on(store.open(opened, false, 10, "welcome".into())).unwrap();
    runtime.block_on(store.session_put("s1", "$authorities", json!("a.b a.c"))).unwrap();
    runtime.block_on(store.session_put("s1", "other", json!(1))).unwrap();
    let keys = ["$is_authenticated", "$authorities"];
    let before = meter.round_trips.get();
    let touched = runtime.block_on(store.touch_reading("c1", now + 5_000, &keys)).unwrap();
    assert_eq!(meter.round_trips.get() - before, 1, "one round trip");
    let (session_id, entries) = touched.expect("a live connector");
    assert_eq!(session_id, "s1");
    let entries = entries.expect("read with the touch");
    assert_eq!(serde_json::to_value(&entries).unwrap(), json!({"$authorities": "a.b a.c"}));
    let active = redis.cli(&["HGET", &redis.key("t:", "c:c1"), "active"]);
    assert_eq!(active, (now + 5_000).to_string(), "the request is recorded");
    assert_eq!(runtime.block_on(store.touch_reading("nobody", now + 5_000, &keys)).unwrap(), None);
    // A plain touch answers the session id alone, as before.
    assert_eq!(runtime.block_on(store.touch("c1", now + 9_000)).unwrap().as_deref(), Some("s1"));
}
