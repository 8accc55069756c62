//! The `Store` contract, proved once for every store: the same checks run against the memory
//! store, against the Redis store on a real `redis-server`, and against the Redis store on a
//! real Redis Cluster of three masters, each started by the test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pollgate::metrics::StoreMeter;
use pollgate::store::memory::MemoryStore;
use pollgate::store::redis::{RedisOptions, RedisStore};
use pollgate::store::{CloseReason, ConnectorInfo, OpenOutcome, PushOutcome, QueueLimits, SendClaim, Store};
use support::cluster::RedisServer;
use support::redis_cluster::RedisCluster;

const LIMITS: QueueLimits = QueueLimits { max_packets: 3, max_bytes: 1000 };

fn connector(id: &str, session_id: &str, now_ms: i64) -> ConnectorInfo {
    ConnectorInfo {
        id: id.into(),
        session_id: session_id.into(),
        address: "127.0.0.1".into(),
        user_agent: String::new(),
        opened_ms: now_ms,
        last_active_ms: now_ms,
    }
}

fn texts(packets: &[pollgate::store::QueuedPacket]) -> Vec<String> {
    packets.iter().map(|p| p.text.to_string()).collect()
}

/// Every check of the contract, on one store.
async fn contract(store: Arc<dyn Store>) {
    let now = pollgate::protocol::now_ms();
    // Atomic admission: one live connector per id, at most `max_connectors`.
    assert_eq!(store.open(connector("a", "s1", now), false, 2, "welcome".into()).await.unwrap(), OpenOutcome::Opened);
    assert_eq!(store.open(connector("a", "s1", now), false, 2, "welcome".into()).await.unwrap(), OpenOutcome::Exists);
    assert_eq!(store.open(connector("b", "s2", now), false, 2, "hi".into()).await.unwrap(), OpenOutcome::Opened);
    assert_eq!(store.open(connector("c", "s3", now), false, 2, "hi".into()).await.unwrap(), OpenOutcome::Full);
    assert_eq!(store.connector_count().await.unwrap(), 2);
    assert_eq!(store.touch("a", now).await.unwrap().as_deref(), Some("s1"));
    assert_eq!(store.touch("nobody", now).await.unwrap(), None);

    // Sequence numbers: contiguous from 1 (the welcome); a drain without ack removes.
    assert_eq!(store.push("a", "p2".into(), LIMITS, None).await.unwrap(), PushOutcome::Queued);
    let round = store.poll_round("a", None, None, now, false).await.unwrap();
    let drained = round.drained.unwrap();
    assert_eq!(texts(&drained.packets), ["welcome", "p2"]);
    assert_eq!(drained.packets.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(drained.seq, 2);

    // Ack: packets up to it go, later ones come again until acknowledged; beyond is refused.
    store.push("a", "p3".into(), LIMITS, None).await.unwrap();
    store.push("a", "p4".into(), LIMITS, None).await.unwrap();
    let r = store.poll_round("a", Some(2), None, now, false).await.unwrap().drained.unwrap();
    assert_eq!(texts(&r.packets), ["p3", "p4"]);
    let r = store.poll_round("a", Some(3), None, now, false).await.unwrap().drained.unwrap();
    assert_eq!((texts(&r.packets), r.seq), (vec!["p4".to_owned()], 4));
    assert!(matches!(store.poll_round("a", Some(9), None, now, false).await.unwrap().drained, Err(4)));
    store.poll_round("a", Some(4), None, now, false).await.unwrap();

    // Limits: a push past them queues nothing; an unknown target is gone.
    // (`b` holds its welcome: two more fill its three.)
    for i in 0..2 {
        assert_eq!(store.push("b", format!("x{i}").into(), LIMITS, None).await.unwrap(), PushOutcome::Queued);
    }
    assert_eq!(store.push("b", "x2".into(), LIMITS, None).await.unwrap(), PushOutcome::Overflow);
    assert_eq!(store.push("nobody", "x".into(), LIMITS, None).await.unwrap(), PushOutcome::Gone);

    // Wake-ups: a round that finds nothing waits, a push wakes it, its next round gets it;
    // a newer sync supersedes it.
    let held = store.poll_round("a", None, None, now, false).await.unwrap();
    assert!(held.drained.as_ref().unwrap().packets.is_empty());
    let mut wakeup = held.wakeup;
    store.push("a", "wake".into(), LIMITS, None).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), wakeup.changed()).await;
    assert!(woke.is_ok(), "the push wakes the held poll");
    let newer = store.poll_round("a", None, None, now, false).await.unwrap();
    assert_eq!(texts(&newer.drained.unwrap().packets), ["wake"]);
    let old = store.poll_round("a", None, Some(held.ticket), now, true).await.unwrap();
    assert!(old.drained.unwrap().superseded, "a newer sync took over");
    // A poll of several connectors begins them together, each as a sync of its own: it
    // wakes the older poll of each and takes its place; acknowledged drains remove nothing.
    let held = store.poll_round("a", None, None, now, false).await.unwrap();
    let mut wakeup = held.wakeup;
    let both = store.begin_polls(&[("a", None), ("b", Some(0))], now).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), wakeup.changed()).await;
    assert!(woke.is_ok(), "the takeover wakes the older poll");
    assert_ne!(both[0].ticket, held.ticket);
    assert!(both[0].drained.as_ref().unwrap().packets.is_empty());
    assert_eq!(texts(&both[1].drained.as_ref().unwrap().packets), ["hi", "x0", "x1"]);
    let old = store.poll_round("a", None, Some(held.ticket), now, true).await.unwrap();
    assert!(old.drained.unwrap().superseded, "the poll of both took over");

    // Idempotent sends: claimed once, in progress meanwhile, replayed once complete, run
    // again at once once released.
    assert_eq!(store.claim_send("a", 1).await.unwrap(), SendClaim::Fresh);
    assert_eq!(store.claim_send("a", 1).await.unwrap(), SendClaim::InProgress);
    store.complete_send("a", 1, Some("body".into())).await.unwrap();
    assert_eq!(store.claim_send("a", 1).await.unwrap(), SendClaim::Replay(Some("body".into())));
    assert_eq!(store.claim_send("a", 2).await.unwrap(), SendClaim::Fresh);
    store.release_send("a", 2).await.unwrap();
    assert_eq!(store.claim_send("a", 2).await.unwrap(), SendClaim::Fresh);

    // Sessions: a login holds until the session is cleared.
    let entries: pollgate::protocol::Token = [("$is_authenticated".to_owned(), true.into())].into_iter().collect();
    assert!(store.session_login("s1", entries.clone()).await.unwrap());
    assert!(!store.session_login("s1", entries).await.unwrap(), "already authenticated");
    assert_eq!(store.session_get("s1", "$is_authenticated").await.unwrap(), Some(true.into()));

    // Close: once, to one caller; the close command is queued and then delivered.
    assert!(store.close("b", CloseReason::Admin, true, None).await.unwrap().is_some());
    assert!(store.close("b", CloseReason::Admin, true, None).await.unwrap().is_none(), "closed once");
    let r = store.poll_round("b", None, None, now, false).await.unwrap().drained.unwrap();
    assert_eq!(r.close_reason, Some(CloseReason::Admin));
    assert_eq!(texts(&r.packets).last().map(String::as_str), Some(pollgate::protocol::CLOSE_COMMAND));
    assert_eq!(store.touch("b", now).await.unwrap(), None);

    // Expiry: a session idle before the cut is reported; one active after it is not.
    assert_eq!(store.expired_sessions(now + 60_000).await.unwrap(), ["s1"]);
    assert!(store.expired_sessions(now - 60_000).await.unwrap().is_empty());
    store.sweep(now, 60_000, 60_000).await.unwrap();
    assert_eq!(store.touch("a", now).await.unwrap().as_deref(), Some("s1"), "a live connector survives a sweep");

    // Activity: a request past the touch granularity counts, so the session is no longer idle
    // before a cut between the two requests.
    assert_eq!(store.expired_sessions(now + 2_500).await.unwrap(), ["s1"]);
    store.touch("a", now + 5_000).await.unwrap();
    assert!(store.expired_sessions(now + 2_500).await.unwrap().is_empty(), "the later request counts");
}

/// A Redis store on the server at `url`, or on the Redis Cluster of `cluster_nodes`.
fn redis_store(url: String, cluster_nodes: Vec<String>) -> Arc<RedisStore> {
    let options = RedisOptions {
        url,
        cluster_nodes,
        prefix: "contract:".into(),
        key_ttl_ms: 600_000,
        retention_ms: 60_000,
        touch_granularity_ms: 1_000,
        record_retention_ms: 60_000,
    };
    RedisStore::new(options, StoreMeter::default()).unwrap()
}

/// The contract holds for the memory store.
#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::default())).await;
}

/// The contract holds for the Redis store on a real redis-server.
#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let redis = RedisServer::start();
    contract(redis_store(redis.url(), Vec::new())).await;
}

/// The contract holds for the Redis store on a Redis Cluster of three masters, its keys
/// spread over their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract_on_a_redis_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let seeds = cluster.seeds().split(',').map(str::to_owned).collect();
    contract(redis_store(String::new(), seeds)).await;
    let sizes = tokio::task::block_in_place(|| cluster.dbsize_per_master());
    assert!(sizes.iter().filter(|(_, n)| *n > 0).count() > 1, "every key on one master: {sizes:?}");
}
