//! pollgate on a Redis Cluster: what only a cluster of Redis masters can show. Each test
//! starts its own Redis Cluster (real `redis-server` processes in cluster mode) and three
//! pollgate nodes over it behind a real round-robin `nginx`, all on loopback: keys spread over
//! the masters, a master killed and replaced by its replica, a master and then the whole
//! cluster frozen for a while, a slot moved to another master, and the system plugin's
//! cluster-wide tokens across masters.
//! The streams are the two-way streams of `cluster_faults.rs` (see `support::two_way`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{Cluster, Redis};
use support::redis_cluster::RedisCluster;
use support::two_way::{through, TwoWay};
use support::Client;

/// Every node: no access log of thousands of lines.
const QUIET: &[(&str, &str)] = &[("ACCESS_LOG", "false")];

/// Messages each way in a stream: 300 unless `TEST_STREAM_MESSAGES` says otherwise (few, so
/// that the file stays near two minutes on two cores; the fault comes a third of the way in
/// whatever the count).
fn messages() -> usize {
    std::env::var("TEST_STREAM_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// How long any wait for a third of a stream may take on a loaded machine: 120 s per 1,000
/// messages, 60 s at least.
fn limit() -> Duration {
    Duration::from_secs((120 * messages() as u64).div_ceil(1_000).max(60))
}

/// Three pollgate nodes behind nginx over a Redis Cluster of `masters` masters with
/// `replicas` replicas each.
fn cluster_of(masters: usize, replicas: usize) -> Cluster {
    Cluster::start_on(Redis::Cluster(RedisCluster::start(masters, replicas)), QUIET)
}

/// The key of connector `id`'s hash (`c:{id}`, after its partition's hash tag).
fn connector_key(c: &mut Cluster, id: &str) -> String {
    let pattern = format!("{}*}}c:{id}", c.prefix);
    let keys = c.redis.cluster().keys(&pattern);
    assert_eq!(keys.len(), 1, "the keys matching {pattern}: {keys:?}");
    keys[0].clone()
}

/// The slot of connector `id`'s state: that of its hash, which its queue, its send records
/// and its session share (the partition's hash tag).
fn slot_of_connector(c: &mut Cluster, id: &str) -> u16 {
    let key = connector_key(c, id);
    c.redis.cluster().slot_of(&key)
}

/// With 200 connectors opened through the balancer, each of the three masters holds at least
/// 15 % of the keys: the store spreads its state over the cluster, not onto one master.
#[test]
fn keys_spread_over_every_master() {
    let mut c = cluster_of(3, 0);
    for _ in 0..200 {
        let r = c.client().get("action=open");
        assert_eq!(r.status, 200, "open: {}", r.text());
    }
    let sizes = c.redis.cluster().dbsize_per_master();
    let total: u64 = sizes.iter().map(|(_, n)| n).sum();
    let shares: Vec<String> =
        sizes.iter().map(|(port, n)| format!("{port}: {n} ({:.1} %)", 100.0 * *n as f64 / total as f64)).collect();
    eprintln!("keys per master, {total} in all: {}", shares.join(", "));
    assert!(total >= 200, "{total} keys for 200 connectors");
    for (port, n) in &sizes {
        assert!(*n as f64 >= 0.15 * total as f64, "master {port} holds {n} of {total} keys: {shares:?}");
    }
}

/// SIGKILL of the master that holds a streaming connector's state, a third of the way
/// through a two-way stream (3 masters, a replica each): its replica takes over, and the
/// stream completes with every message delivered once, in order.
///
/// Redis replicates asynchronously: a write the master acknowledged (and synced to its own
/// append-only file) may not have reached the replica when the master dies, and the promoted
/// replica then lacks it. A failure of this test names what was lost (a message, or a
/// sequence number the receiver had already seen); it is not weakened to allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_fails_over_without_loss() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| cluster_of(3, 1));
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    let [a, _] = stream.source_ids();
    let killed = tokio::task::block_in_place(|| {
        let slot = slot_of_connector(&mut c, &a);
        let redis = c.redis.cluster();
        let owner = redis.owner_of(slot);
        let i = redis.masters().iter().position(|&p| p == owner).unwrap();
        let killed = redis.kill_master(i);
        redis.wait_failover();
        assert_ne!(redis.owner_of(slot), killed, "slot {slot} is still the killed master's");
        // Every node subscribes again to its wake-up channel of every partition, each on its
        // slot's master, the promoted replica included: 3 nodes × 16 partitions.
        let channels = || -> usize {
            redis.masters().iter().map(|&m| redis.cli(m, &["PUBSUB", "SHARDCHANNELS"]).lines().count()).sum()
        };
        let start = Instant::now();
        while channels() != 3 * 16 && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(channels(), 3 * 16, "wake-up channels subscribed on the masters after the failover");
        eprintln!("master {killed} (slot {slot}) killed; its replica took over at {:.1?}", started.elapsed());
        killed
    });
    assert!(stream.received() < messages(), "the stream ended before the failover");
    stream.finish().await;
    assert!(!tokio::task::block_in_place(|| c.redis.cluster().masters()).contains(&killed));
    eprintln!("{} each way, a master killed, in {:.1?}", messages(), started.elapsed());
}

/// The master that holds a streaming connector's state frozen (SIGSTOP) for 3 s, three times
/// the cluster's node timeout, a third of the way through a two-way stream (3 masters, no
/// replica, so no failover: the cluster is down until the master wakes). The nodes' requests
/// to it end by their timeouts rather than wait on it, and once it is back the stream
/// completes with every message delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_frozen_mid_stream_is_waited_out_without_loss() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| cluster_of(3, 0));
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    let [a, _] = stream.source_ids();
    tokio::task::block_in_place(|| {
        let slot = slot_of_connector(&mut c, &a);
        let redis = c.redis.cluster();
        let owner = redis.owner_of(slot);
        let i = redis.masters().iter().position(|&p| p == owner).unwrap();
        redis.pause_master(i, Duration::from_secs(3));
        assert_eq!(redis.owner_of(slot), owner, "slot {slot} changed hands without a replica");
        eprintln!("master {owner} (slot {slot}) frozen for 3 s; the cluster whole again at {:.1?}", started.elapsed());
    });
    assert!(stream.received() < messages(), "the stream ended before the master woke");
    stream.finish().await;
    eprintln!("{} each way, a master frozen, in {:.1?}", messages(), started.elapsed());
}

/// The whole Redis Cluster frozen (SIGSTOP) for 24 s a third of the way through a two-way
/// stream, so that each node's heartbeat times out while Redis still does not answer and the
/// node replaces its link: a request waits on the cluster at most 10 s, and a node whose
/// heartbeat answered just before the freeze spends up to 10 s on its reaper pass's request
/// and starts its next heartbeat a second later, which times out 10 s after that. Once the
/// cluster is back the new links find it, and the stream completes with every message
/// delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_frozen_mid_stream_is_waited_out_without_loss() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| cluster_of(3, 0));
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    tokio::task::block_in_place(|| {
        c.redis.cluster().pause_all(Duration::from_secs(24));
        eprintln!("the cluster frozen for 24 s; whole again at {:.1?}", started.elapsed());
    });
    assert!(stream.received() < messages(), "the stream ended before the cluster woke");
    stream.finish().await;
    let renewals: Vec<f64> = tokio::task::block_in_place(|| {
        c.nodes.iter().map(|n| n.metric("pollgate_store_link_renewals_total")).collect()
    });
    assert!(renewals.iter().all(|r| *r >= 1.0), "each node renews its link: {renewals:?}");
    eprintln!("{} each way, the cluster frozen, in {:.1?}", messages(), started.elapsed());
}

/// The slot of a streaming connector's state moved to another master a third of the way
/// through a two-way stream, its keys migrated a few at a time so that the stream's requests
/// meet the slot while it migrates (`ASK`, `TRYAGAIN`) and after (`MOVED`): the stream
/// completes with every message delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_mid_stream_is_followed() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| cluster_of(3, 0));
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    let [a, _] = stream.source_ids();
    let (slot, from, to, moved) = tokio::task::block_in_place(|| {
        let slot = slot_of_connector(&mut c, &a);
        let redis = c.redis.cluster();
        let from = redis.owner_of(slot);
        let to = *redis.masters().iter().find(|&&p| p != from).unwrap();
        let moved = redis.migrate_slot(slot, from, to, 2, Duration::from_millis(200));
        assert_eq!(redis.owner_of(slot), to);
        (slot, from, to, moved)
    });
    eprintln!("slot {slot}: {moved} keys moved from {from} to {to} by {:.1?}", started.elapsed());
    assert!(moved > 0, "slot {slot} held no key to move");
    assert!(stream.received() < messages(), "the stream ended before the slot had moved");
    // The connector's state is on the new owner, none of the slot's keys on the old one
    // (checked before the stream ends: its end closes the connectors, and their keys go).
    tokio::task::block_in_place(|| {
        let key = connector_key(&mut c, &a);
        let redis = c.redis.cluster();
        assert_eq!(redis.cli(to, &["EXISTS", &key]), "1", "{key} is not on {to}");
        assert_eq!(redis.cli(from, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]), "0");
    });
    stream.finish().await;
    eprintln!("{} each way, a slot moved, in {:.1?}", messages(), started.elapsed());
}

/// getClients lists, and broadcast reaches, connectors whose state lies on every master of
/// the cluster, each polling through another node than the one it opened on.
#[test]
fn broadcast_and_get_clients_reach_connectors_on_every_master() {
    let mut c = cluster_of(3, 0);
    // Receivers opened on each node in turn until their state lies on every master (a
    // connector's partition follows its session id, which is random): six at least.
    let masters = c.redis.cluster().masters();
    let mut receivers: Vec<(Client, String)> = Vec::new();
    let mut masters_used: Vec<u16> = Vec::new();
    while receivers.len() < 6 || masters_used.len() < masters.len() {
        assert!(receivers.len() < 64, "64 receivers, their state on masters {masters_used:?} of {masters:?}");
        let r = Client::new(c.nodes[receivers.len() % 3].addr);
        let id = r.open();
        let slot = slot_of_connector(&mut c, &id);
        let owner = c.redis.cluster().owner_of(slot);
        if !masters_used.contains(&owner) {
            masters_used.push(owner);
        }
        receivers.push((r, id));
    }

    let sender = c.client();
    let sender_id = sender.open();
    sender.login("guest", "guest");
    let clients = sender.system("getClients", json!({"utid": 1}));
    let listed: Vec<String> = clients["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients in {clients}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for (_, id) in &receivers {
        assert!(listed.iter().any(|l| l.ends_with(&format!("@{id}"))), "{id} missing from {listed:?}");
    }
    assert!(listed.iter().any(|l| l == &format!("guest@{sender_id}")), "{listed:?}");
    assert_eq!(listed.len(), receivers.len() + 1, "{listed:?}");

    let polls: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, (r, _))| {
            let held = Client { addr: c.nodes[(i + 1) % 3].addr, connection_id: r.connection_id.clone() };
            std::thread::spawn(move || held.get("action=sync&wait=20000"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    sender.system("broadcast", json!({"data": "to all", "senderIncluded": false, "responseRequested": false}));
    for p in polls {
        let r = p.join().unwrap();
        let got: Vec<Value> = r.packets().iter().map(|p| serde_json::from_str(p).unwrap()).collect();
        assert!(got.iter().any(|t| t["data"] == "to all"), "{got:?}");
    }
}

/// The harness itself, with `redis-cli` alone: keys written land on their masters, a slot
/// moves with its keys, a killed master is replaced by its replica with its keys, and a
/// restart of every instance keeps the data and the cluster whole.
#[test]
fn the_redis_cluster_harness_does_what_it_says() {
    let mut redis = RedisCluster::start(3, 1);
    assert_eq!(redis.ports().len(), 6);
    for i in 0..60 {
        assert_eq!(redis.cli_on_key(&["SET", &format!("k{i}"), &i.to_string()]), "OK");
    }
    let total = |redis: &RedisCluster| redis.dbsize_per_master().iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total(&redis), 60);
    let slot = redis.slot_of("k1");
    let from = redis.owner_of(slot);
    let to = *redis.masters().iter().find(|&&p| p != from).unwrap();
    assert_eq!(redis.migrate_slot(slot, from, to, 2, Duration::ZERO), 1);
    assert_eq!(redis.owner_of(slot), to);
    assert_eq!(redis.cli(to, &["GET", "k1"]), "1");
    assert_eq!(redis.cli_on_key(&["GET", "k1"]), "1");
    // Every write reached the replicas (WAIT) before the kill: none may be lost.
    for port in redis.masters() {
        assert_eq!(redis.cli(port, &["WAIT", "1", "5000"]), "1", "the replica of {port}");
    }
    let killed = redis.kill_master(0);
    redis.wait_failover();
    assert_eq!(redis.masters().len(), 3);
    assert!(!redis.masters().contains(&killed));
    assert_eq!(total(&redis), 60);
    redis.restart_all();
    assert_eq!(redis.running_ports().len(), 6, "the killed master came back too");
    assert_eq!(total(&redis), 60, "the data survives a restart of every instance");
    assert_eq!(redis.cli_on_key(&["GET", "k59"]), "59");
}
