//! The link to Redis: one server or a Redis Cluster behind one connection type ([`Link`]),
//! and where keys go ([`Partitions`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How long connecting, and then each answer, may take before the round trip fails.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// On a Redis Cluster, how long a request may take in all, its retries, redirects and
/// reconnections included. Without this bound a request that the cluster connection holds
/// while it finds its way after a failover could wait for ever, and the heartbeat with it.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many partitions the keys of a Redis Cluster are spread over. Each partition is one
/// hash tag, so one slot: everything of a session and its connectors lives in one, and a
/// script that changes them stays atomic. Sixteen spread evenly over up to eight masters;
/// every listing (broadcast, the admin API, the reaper) asks each partition.
pub(super) const CLUSTER_PARTITIONS: usize = 16;
/// The slots of Redis Cluster.
const SLOTS: usize = 16384;

/// The connection every request of a node shares: multiplexed, so concurrent commands are
/// written one after the other without waiting for each other's answers (pipelined as they
/// come). On a Redis Cluster, one such connection per master, each command routed to the
/// master of its key's slot, `MOVED` and `ASK` followed, the topology refreshed when it
/// changes.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// A reconnecting link to one Redis server; it connects when first used.
    pub(super) fn single(client: &redis::Client) -> Result<Link, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Link::Single(client.get_connection_manager_lazy(config)?))
    }

    /// A link to the Redis Cluster of `seeds`; it connects in the background.
    pub(super) fn cluster(seeds: &[String]) -> Result<Link, RedisError> {
        // Redirects and TRYAGAIN (a slot moving) are retried soon and often; a failover
        // takes about the cluster's node timeout, which these retries span (a second or two).
        let client = ClusterClientBuilder::new(seeds.to_vec())
            .retries(8)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .overall_response_timeout(Some(OVERALL_TIMEOUT))
            .build()?;
        let config =
            ClusterConfig::new().set_connection_timeout(CONNECTION_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT);
        Ok(Link::Cluster(client.get_pending_async_connection_with_config(config)))
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Where keys go. On one Redis server there is one partition, whose keys start with the
/// prefix. On a Redis Cluster there are [`CLUSTER_PARTITIONS`], each a hash tag after the
/// prefix (`pollgate:{07}c:…`), the tags chosen so that their slots spread evenly over the
/// slot range (so over the masters, which own ranges of it).
///
/// A session lives in the partition its id hashes to, and so do its connectors, their
/// queues and their entries in the partition's indexes (`live`, `active`, `sessions`): every
/// script about one connector or one session touches one slot. Outside the partitions, each
/// a key of its own in the slot its name hashes to: a connector's directory entry (`d:{id}`,
/// naming its session), the node list and the event counters.
pub(super) struct Partitions {
    /// Each partition's key prefix.
    prefixes: Vec<String>,
}

impl Partitions {
    /// The one partition of a single Redis server: keys are `prefix` + name.
    pub(super) fn single(prefix: &str) -> Partitions {
        Partitions { prefixes: vec![prefix.to_owned()] }
    }

    /// The partitions of a Redis Cluster. Tag `i` is the shortest decimal number whose slot
    /// lies in the middle half of the `i`th of [`CLUSTER_PARTITIONS`] equal slot ranges (so
    /// every node computes the same tags).
    pub(super) fn cluster(prefix: &str) -> Partitions {
        let width = SLOTS / CLUSTER_PARTITIONS;
        let prefixes = (0..CLUSTER_PARTITIONS)
            .map(|i| {
                let (low, high) = (i * width + width / 4, i * width + width * 3 / 4);
                let tag = (0u32..)
                    .map(|n| n.to_string())
                    .find(|tag| (low..high).contains(&(slot(tag.as_bytes()) as usize)))
                    .expect("every slot range holds a decimal tag");
                format!("{prefix}{{{tag}}}")
            })
            .collect();
        Partitions { prefixes }
    }

    pub(super) fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether keys are spread over a Redis Cluster's slots.
    pub(super) fn clustered(&self) -> bool {
        self.prefixes.len() > 1
    }

    /// The prefix of partition `part`.
    pub(super) fn prefix(&self, part: usize) -> &str {
        &self.prefixes[part]
    }

    /// The partition of a session (and of a connector's directory entry).
    pub(super) fn of(&self, id: &str) -> usize {
        slot(id.as_bytes()) as usize % self.prefixes.len()
    }
}

/// The Redis Cluster hash slot of a key (without a hash tag of its own).
fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot function is Redis Cluster's (values from `CLUSTER KEYSLOT`).
    #[test]
    fn slots_are_redis_clusters() {
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b""), 0);
    }

    /// The tags' slots are spread: one in each sixteenth of the slot range.
    #[test]
    fn cluster_tags_spread_over_the_slot_range() {
        let parts = Partitions::cluster("p:");
        assert_eq!(parts.len(), CLUSTER_PARTITIONS);
        for i in 0..parts.len() {
            let prefix = parts.prefix(i);
            let tag = prefix.strip_prefix("p:{").and_then(|t| t.strip_suffix('}')).unwrap();
            assert_eq!(slot(tag.as_bytes()) as usize * CLUSTER_PARTITIONS / SLOTS, i, "{prefix}");
        }
        assert!(!Partitions::single("p:").clustered());
        assert_eq!(Partitions::single("p:").of("anything"), 0);
    }
}
