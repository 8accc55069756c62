//! Wake-ups of the polls held on this node. A sync that waits records its node as the
//! connector's `holder`; a script that changes the connector publishes the connector id on
//! that node's channel in the connector's partition (`{partition prefix}n:{node}`), and this
//! node's subscriber signals the local `watch` channel of the held poll. On one Redis server
//! that is plain pub/sub on one channel; on a Redis Cluster, sharded pub/sub (`SPUBLISH`,
//! `SSUBSCRIBE`, Redis 7), one channel per partition, each served by the master of its slot.
//! A shared poll that takes over polls held elsewhere publishes their wake-ups itself, once
//! its scripts have taken every connector
//! ([`Store::begin_polls`](crate::store::Store::begin_polls)).
//! Whenever a subscription may have missed a message (lost, re-made, or moved to another
//! master), every local poll is woken, so none sleeps through a packet queued meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, watch};

/// The wake-up channels of the polls held on this node, by connector id.
pub(super) type Waiters = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

/// How long to wait before subscribing again after a failure.
const RETRY: Duration = Duration::from_millis(250);

/// Fires every wake-up made on this node.
pub(super) fn wake_all(waiters: &Waiters) {
    for tx in waiters.lock().values() {
        wake(tx);
    }
}

/// A wake-up for the next change of connector `id` seen on this node.
pub(super) fn subscribe(waiters: &Waiters, id: &str) -> watch::Receiver<u64> {
    let mut waiters = waiters.lock();
    match waiters.get(id) {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = watch::channel(0);
            waiters.insert(id.to_owned(), tx);
            rx
        }
    }
}

/// Fires the wake-ups made from `tx` (one connector's polls held on this node).
pub(super) fn wake(tx: &watch::Sender<u64>) {
    tx.send_modify(|v| *v = v.wrapping_add(1));
}

/// Wakes the polls of the space-separated connector ids of a message.
fn wake_ids(waiters: &Waiters, payload: &str) {
    let mut waiters = waiters.lock();
    for id in payload.split(' ') {
        if let Some(tx) = waiters.get(id) {
            wake(tx);
            if tx.receiver_count() == 0 {
                waiters.remove(id);
            }
        }
    }
}

/// Holds this node's subscription to `channel` on one Redis server; subscribes again after
/// every loss, until the task is cancelled.
pub(super) async fn subscribe_single(client: redis::Client, channel: String, waiters: Waiters) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    // Whatever was published while we were not listening is missed: re-check.
                    wake_all(&waiters);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        wake_ids(&waiters, &payload);
                    }
                    tracing::warn!("redis subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "redis subscribe failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "redis unreachable for wake-ups; retrying"),
        }
        // Polls held here answer now (their drain reports the store's state or error).
        wake_all(&waiters);
        tokio::time::sleep(RETRY).await;
    }
}

/// Subscribes to each of `channels` on its own: each lives in its partition's slot, and one
/// `SSUBSCRIBE` may name channels of one slot only.
async fn ssubscribe_each(conn: &mut ClusterConnection, channels: &[String]) -> redis::RedisResult<()> {
    for channel in channels {
        conn.ssubscribe(channel).await?;
    }
    Ok(())
}

/// Holds this node's sharded subscriptions to `channels` (one per partition) on the Redis
/// Cluster of `seeds`, until the task is cancelled. When a master's connection is lost (it
/// died, and a replica may be taking over) or Redis drops a subscription (its slot moved to
/// another master), the subscriptions are all made again on a new cluster connection, from
/// the topology as it is then, retrying until every channel is subscribed on its slot's
/// master; meanwhile, and after, every local poll is woken, so none sleeps through a packet
/// queued while a channel had no subscriber. (The cluster connection's own resubscription
/// was seen to miss most channels of a master after a failover.)
pub(super) async fn subscribe_cluster(seeds: Vec<String>, channels: Vec<String>, waiters: Waiters) {
    loop {
        let (tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let client = ClusterClientBuilder::new(seeds.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build();
        let connection = match client {
            Ok(client) => client.get_async_connection().await,
            Err(e) => Err(e),
        };
        match connection {
            Ok(mut conn) => match ssubscribe_each(&mut conn, &channels).await {
                Ok(()) => {
                    wake_all(&waiters);
                    while let Some(push) = pushes.recv().await {
                        match push.kind {
                            PushKind::SMessage => {
                                if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                                    wake_ids(&waiters, &String::from_utf8_lossy(payload));
                                }
                            }
                            // Made again (by the connection itself): what was published
                            // meanwhile is missed.
                            PushKind::SSubscribe => wake_all(&waiters),
                            // A master went away, or a channel's slot moved: subscribe anew.
                            PushKind::Disconnection | PushKind::SUnsubscribe => break,
                            _ => {}
                        }
                    }
                    tracing::warn!("redis cluster subscription lost; subscribing again");
                }
                Err(e) => tracing::warn!(error = %e, "redis cluster subscribe failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "redis cluster unreachable for wake-ups; retrying"),
        }
        wake_all(&waiters);
        tokio::time::sleep(RETRY).await;
    }
}
