//! The Redis store: every node of a cluster keeps its state in Redis, one server or a Redis
//! Cluster, so any node can answer any request of any connector.
//!
//! Every method that reads and writes is one Lua script (`lua/*.lua`), which Redis runs
//! atomically: no read-then-delete race between nodes, no lost update. Keys are built from
//! `redis_prefix` (so one Redis can serve several clusters, and the tests) and, on a Redis
//! Cluster, a partition's hash tag ([`link::Partitions`]: `P` below is the prefix of the
//! partition of the session, which its connectors share):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P c:{id}` | hash | a connector: session, address, user agent, times, `closed`, poll `ticket` and `holder` node, queue `last`/`acked`/`bytes`, `sendlast`, `sendfloor` (highest forgotten send) |
//! | `P q:{id}` | list | its queued packets; the first has sequence number `acked + 1` |
//! | `P sp:{id}` `P sr:{id}` `P so:{id}` | hash, hash, zset | idempotent sends: in progress (since when), kept responses, their order |
//! | `P once:{id}:{seq}` | hash | the packets an idempotent send in progress queued in this partition, so a re-run does not queue them twice; deleted when it completes (by the node that ran it, in every partition it queued in) |
//! | `P live` | zset | the partition's live connectors by last activity (admission count, eviction) |
//! | `P sm:{sid}` `P s:{sid}` `P sc:{sid}` | hash, hash, set | a session: meta (`last`, `shared`, `empty`, `v`: its storage's version), storage, connectors |
//! | `P sx:{sid}` | hash | a session's record for the admin API (`opened`, `addr`, `ua`, `user`, `closed`, `last`), kept after it closes |
//! | `P sessions` | zset | the partition's session ids by open time (the admin API's list; pruned as records expire) |
//! | `P active` | zset | the partition's sessions with live connectors by last request (the reaper) |
//! | `admitted` | zset | Redis Cluster only: every live connector by admission time (the exact count behind `maxconnections`) |
//! | `d:{id}` | string | Redis Cluster only: the session of connector `id` (the directory), so its partition |
//! | `ev:{key}` | zset | event times of a counter (failed logins) |
//! | `nodes` | zset | nodes by last heartbeat |
//!
//! Everything carries an expiry, refreshed while it is in use, so nothing is left behind when
//! every node is gone. Wake-ups are described in [`wakeups`].
//!
//! Round trips. All requests of a node share one multiplexed connection ([`link::Link`]; on
//! a Redis Cluster one per master): concurrent commands are written one after the other
//! without waiting for each other's answers and answered in order (pipelined as they come,
//! not batched by a timer), so a busy node costs Redis a read and a write per batch, not per
//! command. On the common path a long-poll echo is two of them: a `send` of the system
//! plugin is one script ([`Store::send_step`], `send.lua`: touch, claim, rights, queue,
//! response record, wake-up), a `sync` round is one (`poll.lua`: touch, ack, drain, holder).
//! On a Redis Cluster a send whose target lives in another partition is taken step by step
//! (claim, push, completion), each step atomic in its own partition.
//!
//! What the node caches, per connector it has served:
//! - Redis Cluster only, its partition ([`RedisStore::homes`]), read once from the directory.
//!   It never changes while the connector lives; a connector id opened again with a session
//!   of another partition is found missing in the old one, and the directory is read again.
//! - For a connector that sends through the node ([`RedisStore::senders`]), its session id
//!   and that session's rights entries, with the session's version. A connector's session
//!   id never changes while it lives; a connector id reopened with another session is seen
//!   by `send.lua`, which compares the cached id with the connector's hash. The rights
//!   change with the session's storage (a login, a logout, a `sessionPut` on any node):
//!   every write to it increments its version (`sm:{sid}` field `v`, set to a new value when
//!   the session is made, so a session made again under the same id does not match an old
//!   entry), and `send.lua` acts on the cached rights only if the version is still the one
//!   cached; otherwise it does nothing and answers the current entries, and the send is
//!   decided again. So a rights check is never older than the send it allows.
//!
//! Entries go when this node closes the connector, when Redis answers that the connector is
//! gone, and in the reaper's sweep once unused for the key expiry. The source id and address
//! binding are kept per client connection by the HTTP layer and never reach the store.
//!
//! On a Redis Cluster, what spans partitions is not one atomic step: an open (the
//! admission in `admitted`, then the directory, then the partition), a close (then leaving
//! `admitted`), a broadcast (one step per partition) and a send to a connector of another
//! partition (its idempotency still holds: see `once`).

mod decode;
mod link;
mod wakeups;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use parking_lot::Mutex;
use redis::{FromRedisValue, RedisError, Script, ScriptInvocation};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::decode::{info_from, parse_u64, record_from, session_entries, split_stored, storage_from};
use self::link::{Link, Partitions};
use self::wakeups::{subscribe, wake, wake_all, Waiters};
use super::{
    CloseReason, ConnectorInfo, Drained, Fanout, OpenOutcome, PollRound, PushOutcome, QueueLimits, QueuedPacket,
    SendClaim, SendStep, SendStepped, SessionRecord, Store, StoreError, StoreResult, Wakeup, SEND_RESPONSES_KEPT,
    SHARED_SESSION_LINGER_MS,
};
use crate::metrics::StoreMeter;
use crate::protocol::{Token, CLOSE_COMMAND};

/// A node is alive while its heartbeat is younger than this.
const NODE_ALIVE_MS: i64 = 5_000;
/// How long a send may stay in progress before another node may re-run it (its node died).
const SEND_LEASE_MS: i64 = 10_000;
/// How long failed-login counters are kept.
const COUNTER_TTL_MS: i64 = 3_600_000;
/// Redis Cluster: an admitted id no partition holds live is taken for one left behind only
/// after this long (an open admitted but not yet made looks the same).
const ADMISSION_GRACE_MS: i64 = 10_000;
/// Push scripts take at most this many connectors: a huge broadcast must not stall Redis for
/// everyone else.
const PUSH_CHUNK: usize = 1000;

/// The scripts, loaded once (redis-rs sends EVALSHA and falls back to EVAL).
struct Scripts {
    open: Script,
    admit: Script,
    retire: Script,
    touch: Script,
    close: Script,
    push: Script,
    poll: Script,
    sends: Script,
    session: Script,
    send: Script,
}

impl Scripts {
    /// The scripts; `sharded`: they publish wake-ups with `SPUBLISH` (Redis Cluster).
    fn new(sharded: bool) -> Scripts {
        let script = |source: &str| match sharded {
            true => Script::new(&source.replace("'PUBLISH'", "'SPUBLISH'")),
            false => Script::new(source),
        };
        let touch_fn = include_str!("lua/touch_fn.lua");
        Scripts {
            open: script(include_str!("lua/open.lua")),
            admit: script(include_str!("lua/admit.lua")),
            retire: script(include_str!("lua/retire.lua")),
            touch: script(&[touch_fn, include_str!("lua/touch.lua")].concat()),
            close: script(include_str!("lua/close.lua")),
            push: script(include_str!("lua/push.lua")),
            poll: script(&[touch_fn, include_str!("lua/poll.lua")].concat()),
            sends: script(include_str!("lua/sends.lua")),
            session: script(include_str!("lua/session.lua")),
            send: script(&[touch_fn, include_str!("lua/send.lua")].concat()),
        }
    }
}

/// What a node keeps of a connector that sends through it (see the module docs for how each
/// part is kept true).
struct Sender {
    session_id: String,
    /// The session's version (`sm:{sid}` field `v`) when `rights` were read; '' for a
    /// session never written to.
    version: String,
    /// The session's rights entries (those of [`SendStep::rights_keys`] that are set).
    rights: Token,
    /// The last send that used it (the sweep forgets entries unused for the key expiry).
    used_ms: i64,
}

/// Where a connector's keys are (Redis Cluster), as this node read it from the directory.
struct Home {
    part: usize,
    /// The connector's session (its keys are declared by the scripts that touch them).
    session: Arc<str>,
    /// When this node last refreshed the directory entry's expiry (or read it).
    refreshed_ms: i64,
}

/// Where to find Redis and how long things live there.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The Redis server, when `cluster_nodes` is empty.
    pub url: String,
    /// Seed nodes of a Redis Cluster; when not empty, the store is that cluster.
    pub cluster_nodes: Vec<String>,
    pub prefix: String,
    /// Expiry of everything in use, refreshed on every request (above the inactivity timeout).
    pub key_ttl_ms: i64,
    /// How long a closed connector keeps its queue for the close command to be collected.
    pub retention_ms: i64,
    /// A request within this time of the last recorded activity records nothing (small
    /// against the inactivity timeout, large against the time between requests).
    pub touch_granularity_ms: i64,
    /// How long the record of a closed session stays listable.
    pub record_retention_ms: i64,
}

pub struct RedisStore {
    /// The link every request clones; on a Redis Cluster replaced by a fresh one when a probe
    /// times out (see `renew_link`).
    conn: Mutex<Link>,
    scripts: Scripts,
    parts: Partitions,
    options: RedisOptions,
    /// This node's id (random per process): the channel its held polls are woken on.
    node: String,
    /// Local held polls by connector id.
    waiters: Waiters,
    /// The connectors that send through this node, by connector id: what `send.lua` needs
    /// from the node to decide a send in one round trip. Locked only to read or replace an
    /// entry, never across a round trip.
    senders: Mutex<HashMap<String, Sender>>,
    /// Redis Cluster: the partitions of the connectors this node served, by connector id.
    homes: Mutex<HashMap<String, Home>>,
    /// Redis Cluster: for each idempotent send this node is running (`sender:seq`), the
    /// partitions other than its sender's where it queued packets under its `once` keys, so
    /// that its completion deletes them there too (its own partition's go in `sends.lua`).
    once_elsewhere: Mutex<HashMap<String, Vec<usize>>>,
    /// Ends the subscriber task when the store goes.
    _subscriber: DropGuard,
    meter: StoreMeter,
    /// Whether Redis is known to be out of reach; two states:
    ///
    /// - `false` (up, the start): every request makes its round trips.
    /// - `true` (down): a round trip failed on the connection itself (I/O error, refused,
    ///   dropped, or no answer within the response timeout). Requests then fail at once with
    ///   [`StoreError`] (503) instead of each waiting out the timeout, until a probe, which
    ///   always goes to Redis, succeeds: the heartbeat (every second or less) or a `/readyz`
    ///   ping. Either sets it back to `false`; a probe failing on the connection sets `true`.
    ///
    /// Errors Redis itself answers (a script error, `LOADING`, ...) prove the link works and
    /// leave it as it is. A request in flight when a probe clears it may set it again; the
    /// next probe, a second later, clears it again.
    down: AtomicBool,
    /// Redis Cluster: when this node last looked for ids left in the admitted set.
    reconciled_ms: AtomicI64,
    /// Redis Cluster: when the link was last replaced (`renew_link`).
    renewed_ms: AtomicI64,
}

/// The least time between two replacements of a Redis Cluster link.
const RENEW_EVERY_MS: i64 = 10_000;

/// Whether the caller takes the turn of a chore done at most every `every_ms` whose last turn
/// began at `last` (ms): enough time has passed, and no other caller took it meanwhile. The
/// turn is then recorded as beginning at `now_ms`.
fn take_turn(last: &AtomicI64, now_ms: i64, every_ms: i64) -> bool {
    let before = last.load(Ordering::Relaxed);
    now_ms - before >= every_ms && last.compare_exchange(before, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

fn store_error(e: RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// Prepares the store and starts the wake-up subscriber. Redis need not be up yet: until
    /// it is, requests fail with [`StoreError`] (503), and the node recovers by itself.
    pub fn new(options: RedisOptions, meter: StoreMeter) -> StoreResult<Arc<RedisStore>> {
        let node = format!("{:016x}", rand::random::<u64>());
        let waiters: Waiters = Default::default();
        let stop = CancellationToken::new();
        let clustered = !options.cluster_nodes.is_empty();
        let (conn, parts) = if clustered {
            let parts = Partitions::cluster(&options.prefix);
            let channels = (0..parts.len()).map(|p| format!("{}n:{node}", parts.prefix(p))).collect();
            let subscriber = wakeups::subscribe_cluster(options.cluster_nodes.clone(), channels, waiters.clone());
            tokio::spawn(stop.clone().run_until_cancelled_owned(subscriber));
            (Link::cluster(&options.cluster_nodes).map_err(store_error)?, parts)
        } else {
            let client = redis::Client::open(options.url.as_str()).map_err(store_error)?;
            let channel = format!("{}n:{node}", options.prefix);
            let subscriber = wakeups::subscribe_single(client.clone(), channel, waiters.clone());
            tokio::spawn(stop.clone().run_until_cancelled_owned(subscriber));
            (Link::single(&client).map_err(store_error)?, Partitions::single(&options.prefix))
        };
        Ok(Arc::new(RedisStore {
            conn: Mutex::new(conn),
            scripts: Scripts::new(clustered),
            parts,
            options,
            node,
            waiters,
            senders: Mutex::default(),
            homes: Mutex::default(),
            once_elsewhere: Mutex::default(),
            _subscriber: stop.drop_guard(),
            meter,
            down: AtomicBool::new(false),
            reconciled_ms: AtomicI64::new(0),
            renewed_ms: AtomicI64::new(0),
        }))
    }

    /// A key of partition `part`.
    fn key_in(&self, part: usize, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.parts.prefix(part))
    }

    /// An index of partition `part` (`live`, `active`, `sessions`).
    fn index_in(&self, part: usize, name: &str) -> String {
        format!("{}{name}", self.parts.prefix(part))
    }

    /// A key of its own, in no partition (`ev:`, `d:`).
    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.options.prefix)
    }

    /// A key shared by all nodes, in no partition (`nodes`).
    fn index(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    /// `script` run in partition `part`, whose prefix is the script's first argument. On a
    /// Redis Cluster the script declares `keys()`, the keys it touches: the cluster routes it
    /// by them to the master of their slot, and while that slot moves to another master it
    /// runs the script where all of them are, or answers TRYAGAIN until they are together
    /// again (which the link retries), so a script never sees a connector half moved. On one
    /// server it declares none.
    fn invoke<'a>(&self, script: &'a Script, part: usize, keys: impl FnOnce() -> Vec<String>) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        if self.parts.clustered() {
            for key in keys() {
                invocation.key(key);
            }
        }
        invocation.arg(self.parts.prefix(part));
        invocation
    }

    /// The keys of connector `id` itself in partition `part`.
    fn own_keys(&self, part: usize, id: &str) -> Vec<String> {
        ["c", "q", "sp", "sr", "so"].iter().map(|kind| self.key_in(part, kind, id)).collect()
    }

    /// The keys of session `sid` in partition `part`.
    fn session_keys(&self, part: usize, sid: &str) -> Vec<String> {
        ["sm", "s", "sc", "sx"].iter().map(|kind| self.key_in(part, kind, sid)).collect()
    }

    /// Every key a script about connector `id` may touch: its own, its partition's indexes
    /// and, when this node knows it (Redis Cluster: from the directory), its session's.
    fn connector_keys(&self, part: usize, id: &str) -> Vec<String> {
        let mut keys = self.own_keys(part, id);
        keys.extend(["live", "active", "sessions"].iter().map(|name| self.index_in(part, name)));
        if let Some(session) = self.homes.lock().get(id).map(|home| home.session.clone()) {
            keys.extend(self.session_keys(part, &session));
        }
        keys
    }

    /// The partition of connector `id`; `None` when no connector of that id is known.
    /// On one Redis server there is one partition. On a Redis Cluster it is cached, or read
    /// from the directory; while the connector makes requests, each node that serves it
    /// refreshes the directory entry's expiry every quarter of it.
    async fn home(&self, id: &str) -> StoreResult<Option<usize>> {
        if !self.parts.clustered() {
            return Ok(Some(0));
        }
        let now = crate::protocol::now_ms();
        let cached = self.homes.lock().get_mut(id).map(|home| {
            let refresh = now - home.refreshed_ms >= self.options.key_ttl_ms / 4;
            if refresh {
                home.refreshed_ms = now;
            }
            (home.part, refresh)
        });
        if let Some((part, refresh)) = cached {
            if refresh {
                let (mut conn, key, ttl) = (self.conn()?, self.key("d", id), self.options.key_ttl_ms);
                tokio::spawn(async move {
                    let _: Result<(), RedisError> = redis::cmd("PEXPIRE").arg(key).arg(ttl).query_async(&mut conn).await;
                });
            }
            return Ok(Some(part));
        }
        let session: Option<String> = redis::cmd("GET")
            .arg(self.key("d", id))
            .ask(self).await?;
        let Some(session) = session else { return Ok(None) };
        let part = self.parts.of(&session);
        self.homes.lock().insert(id.to_owned(), Home { part, session: session.into(), refreshed_ms: now });
        Ok(Some(part))
    }

    /// After no connector `id` was found in partition `was`: the partition the directory
    /// names now, if it is another (the id was opened again, with a session elsewhere).
    async fn moved(&self, id: &str, was: usize) -> StoreResult<Option<usize>> {
        if !self.parts.clustered() {
            return Ok(None);
        }
        self.homes.lock().remove(id);
        Ok(self.home(id).await?.filter(|part| *part != was))
    }

    /// Runs `op` in connector `id`'s partition, or answers `missing()` when the connector is
    /// unknown. When `op` finds no connector there (`found` says no) and the directory now
    /// names another partition, runs it once more there.
    async fn at_home<T, F, Fut>(&self, id: &str, missing: impl Fn() -> T, found: impl Fn(&T) -> bool, op: F) -> StoreResult<T>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let Some(part) = self.home(id).await? else { return Ok(missing()) };
        let result = op(part).await?;
        if found(&result) {
            return Ok(result);
        }
        match self.moved(id, part).await? {
            Some(part) => op(part).await,
            None => Ok(result),
        }
    }

    /// `op` in every partition at once, its answers in partition order.
    async fn in_every_part<T, F, Fut>(&self, op: F) -> StoreResult<Vec<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        try_join_all((0..self.parts.len()).map(op)).await
    }

    /// Runs `poll.lua` for one round of a sync of connector `id` (see [`Store::poll_round`])
    /// in its partition; `quiet`: another node holding the connector's last sync is named in
    /// the answer, not woken. Answers the partition and the script's answer.
    async fn poll_script(
        &self,
        id: &str,
        ack: Option<u64>,
        ticket: Option<u64>,
        now_ms: i64,
        waited: bool,
        quiet: bool,
    ) -> StoreResult<(usize, Vec<String>)> {
        let ticket_arg = ticket.map(|t| t.to_string()).unwrap_or_default();
        self.at_home(
            id,
            || (0, vec![ticket.unwrap_or(0).to_string(), String::new(), "unknown".to_owned()]),
            |(_, reply): &(usize, Vec<String>)| reply.get(2).map(String::as_str) != Some("unknown"),
            |part| {
                let ticket_arg = &ticket_arg;
                async move {
                    let reply = self
                        .invoke(&self.scripts.poll, part, || self.connector_keys(part, id))
                        .arg(id)
                        .arg(ticket_arg)
                        .arg(ack.map(|a| a.to_string()).unwrap_or_default())
                        .arg(now_ms)
                        .arg(if waited { "1" } else { "" })
                        .arg(&self.node)
                        .arg(self.options.key_ttl_ms)
                        .arg(self.record_since(now_ms))
                        .arg(if quiet { "1" } else { "" })
                        .ask(self)
                        .await?;
                    Ok((part, reply))
                }
            },
        )
        .await
    }

    /// After a sync of connector `id` began: wakes an older one held on this node, without
    /// counting that wake-up as the new sync's own `wakeup` (made before it began) unless
    /// something else fired it since.
    fn wake_older_here(&self, id: &str, wakeup: &mut watch::Receiver<u64>) {
        if let Some(tx) = self.waiters.lock().get(id) {
            // Every wake-up is sent under this lock: nothing can slip in between.
            let fired_since = wakeup.has_changed().unwrap_or(true);
            wake(tx);
            if !fired_since {
                wakeup.mark_unchanged();
            }
        }
    }

    /// Redis Cluster: admits connector `id` under `max` live connectors, in the one set
    /// that counts them all (so the limit is exact across partitions and nodes). A full set
    /// is first checked for ids no partition holds live, left by a node that died between a
    /// close and its leaving the set: those admitted more than a few seconds ago (not an
    /// open in flight) go, at most once a second per node.
    async fn admit(&self, id: &str, now_ms: i64, max: usize) -> StoreResult<bool> {
        for attempt in 0..2 {
            let admitted: String = self
                .scripts
                .admit
                .prepare_invoke()
                .key(self.index("admitted"))
                .arg(id)
                .arg(now_ms)
                .arg(max)
                .arg(self.options.key_ttl_ms)
                .ask(self).await?;
            if admitted != "full" {
                return Ok(true);
            }
            if attempt > 0 || !take_turn(&self.reconciled_ms, now_ms, 1000) {
                break;
            }
            let before = format!("({}", now_ms - ADMISSION_GRACE_MS);
            let admitted: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.index("admitted"))
                .arg("-inf")
                .arg(before)
                .ask(self).await?;
            let live: std::collections::HashSet<String> =
                self.in_every_part(|part| self.live_ids(part)).await?.into_iter().flatten().collect();
            let stale: Vec<&String> = admitted.iter().filter(|id| !live.contains(*id)).collect();
            if stale.is_empty() {
                break;
            }
            let _: () = redis::cmd("ZREM")
                .arg(self.index("admitted"))
                .arg(&stale)
                .ask(self).await?;
        }
        Ok(false)
    }

    /// How many entries index `name` (`live`, `active`) holds over all partitions.
    async fn index_total(&self, name: &str) -> StoreResult<usize> {
        let counts: Vec<usize> =
            self.in_every_part(|part| async move { redis::cmd("ZCARD").arg(self.index_in(part, name)).ask(self).await })
                .await?;
        Ok(counts.into_iter().sum())
    }

    /// The live connectors of partition `part`, least recently active first.
    async fn live_ids(&self, part: usize) -> StoreResult<Vec<String>> {
        redis::cmd("ZRANGE")
            .arg(self.index_in(part, "live"))
            .arg(0)
            .arg(-1)
            .ask(self).await
    }

    /// The connection for one round trip (counted), or at once the store error while Redis is
    /// known to be out of reach (counted as an error, not as a round trip; see `down`).
    fn conn(&self) -> StoreResult<Link> {
        if self.down.load(Ordering::Relaxed) {
            self.meter.errors.inc();
            return Err(StoreError("redis: unreachable (failing fast until it answers a probe)".into()));
        }
        Ok(self.probe_conn())
    }

    /// The `since` of the scripts that record a request at `now_ms` (touch_fn.lua): a request
    /// records nothing when the connector's last recorded activity is after it.
    fn record_since(&self, now_ms: i64) -> i64 {
        now_ms - self.options.touch_granularity_ms
    }

    /// The connection for a probe (the heartbeat, `/readyz`): it goes to Redis even while
    /// `down`, and its outcome sets `down` (see [`RedisStore::probed`]).
    fn probe_conn(&self) -> Link {
        self.meter.round_trips.inc();
        self.conn.lock().clone()
    }

    /// A Redis Cluster link whose probe timed out may have lost its way (it holds requests
    /// for a topology that changed under it, and answers none): a new link starts again from
    /// the seeds, at most once every [`RENEW_EVERY_MS`]. Requests in flight on the old link
    /// end by its timeouts.
    fn renew_link(&self) {
        if !take_turn(&self.renewed_ms, crate::protocol::now_ms(), RENEW_EVERY_MS) {
            return;
        }
        match Link::cluster(&self.options.cluster_nodes) {
            Ok(link) => {
                *self.conn.lock() = link;
                self.meter.link_renewals.inc();
                tracing::warn!("redis cluster probe timed out; the link starts again from the seeds");
            }
            Err(e) => tracing::warn!(error = %e, "redis cluster link could not be renewed"),
        }
    }

    /// Records a probe's outcome: an answer from Redis, even an error, means it is reachable.
    fn probed<T>(&self, result: Result<T, RedisError>) -> StoreResult<T> {
        match result {
            Ok(v) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis reachable again");
                }
                Ok(v)
            }
            Err(e) => {
                if !unreachable(&e) {
                    self.down.store(false, Ordering::Relaxed);
                }
                if e.is_timeout() && self.parts.clustered() {
                    self.renew_link();
                }
                Err(self.failed(e))
            }
        }
    }

    /// A failed round trip (counted). A failure of the connection itself marks Redis out of
    /// reach, so that further requests fail fast until a probe succeeds.
    fn failed(&self, e: RedisError) -> StoreError {
        self.meter.errors.inc();
        if unreachable(&e) && !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "redis out of reach; failing fast until it answers a probe");
        }
        store_error(e)
    }

    /// The touch script (`touch.lua`) for a request of `id` in partition `part`, reading
    /// `keys` of its session; `None` when no live connector has the id there.
    async fn touch_in<T: FromRedisValue>(&self, part: usize, id: &str, now_ms: i64, keys: &[&str]) -> StoreResult<Option<T>> {
        let mut invocation = self.invoke(&self.scripts.touch, part, || self.connector_keys(part, id));
        invocation
            .arg(id)
            .arg(now_ms)
            .arg(self.options.key_ttl_ms)
            .arg(self.record_since(now_ms))
            .arg(keys);
        invocation.ask(self).await
    }

    /// One step of `sends.lua` (claim, complete or release the idempotent send `seq`).
    async fn sends_op(&self, id: &str, op: &str, seq: u64, args: &[&str]) -> StoreResult<Vec<String>> {
        // An unknown connector: the script answers as for one that is gone, in any partition.
        let part = self.home(id).await?.unwrap_or(0);
        let mut call = self.invoke(&self.scripts.sends, part, || {
            let mut keys = self.connector_keys(part, id);
            keys.push(self.key_in(part, "once", &format!("{id}:{seq}")));
            keys
        });
        call.arg(id).arg(op).arg(seq);
        for a in args {
            call.arg(*a);
        }
        call.ask(self).await
    }

    async fn session_op(&self, session_id: &str, op: &str, args: &[&str]) -> StoreResult<redis::Value> {
        let part = self.parts.of(session_id);
        let mut call = self.invoke(&self.scripts.session, part, || self.session_keys(part, session_id));
        call.arg(session_id).arg(op);
        for a in args {
            call.arg(*a);
        }
        call.ask(self).await
    }

    /// `push.lua` in partition `part` for `ids` (all of that partition), in bounded chunks;
    /// the status of each id, in order.
    async fn push_in(
        &self,
        part: usize,
        ids: &[&str],
        text: &str,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        self.note_once_elsewhere(part, once);
        let mut statuses = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PUSH_CHUNK) {
            let mut call = self.invoke(&self.scripts.push, part, || {
                let mut keys: Vec<String> =
                    chunk.iter().flat_map(|id| [self.key_in(part, "c", id), self.key_in(part, "q", id)]).collect();
                // The send's record of what it queued: `once` is '<sender>:<seq>:<n>'.
                if let Some((record, _)) = once.and_then(|once| once.rsplit_once(':')) {
                    keys.push(self.key_in(part, "once", record));
                }
                keys
            });
            call.arg(text).arg(limits.max_packets).arg(limits.max_bytes);
            // A send cut by a dying node may be re-run as long as its connector lives: its once
            // keys live as long (a completed send deletes its own at once).
            call.arg(once.unwrap_or_default()).arg(self.options.key_ttl_ms);
            for id in chunk {
                call.arg(*id);
            }
            let status: Vec<String> = call.ask(self).await?;
            statuses.extend(status);
        }
        Ok(statuses)
    }

    /// Connector `id`'s `closed` field, then what [`info_from`] reads.
    async fn connector_fields(&self, part: usize, id: &str) -> StoreResult<Vec<Option<String>>> {
        redis::cmd("HMGET")
            .arg(self.key_in(part, "c", id))
            .arg(&["closed", "sid", "addr", "ua", "opened", "active"])
            .ask(self).await
    }

    /// Redis Cluster: notes that the send of `once` ('<sender>:<seq>:<n>') queues in
    /// partition `part`, when that is not its sender's (see `once_elsewhere`).
    fn note_once_elsewhere(&self, part: usize, once: Option<&str>) {
        let Some((record, _)) = once.and_then(|once| once.rsplit_once(':')) else { return };
        if !self.parts.clustered() {
            return;
        }
        let sender = record.rsplit_once(':').map_or(record, |(sender, _)| sender);
        if self.homes.lock().get(sender).is_some_and(|home| home.part == part) {
            return;
        }
        let mut elsewhere = self.once_elsewhere.lock();
        let parts = elsewhere.entry(record.to_owned()).or_default();
        if !parts.contains(&part) {
            parts.push(part);
        }
    }

    /// The live connectors of partition `part`.
    async fn connectors_in(&self, part: usize) -> StoreResult<Vec<ConnectorInfo>> {
        let ids = self.live_ids(part).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Commands one by one, not a pipeline, which a Redis Cluster would not redirect while
        // the slot moves; the shared connection writes them together all the same.
        let rows = try_join_all(ids.iter().map(|id| self.connector_fields(part, id))).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter(|(_, row)| row.first().and_then(|c| c.as_deref()) == Some(""))
            .filter_map(|(id, row)| info_from(id, row.into_iter().skip(1).collect()))
            .collect())
    }

    /// The session records of partition `part`; forgets index entries whose record expired.
    async fn session_records_in(&self, part: usize) -> StoreResult<Vec<SessionRecord>> {
        let index = self.index_in(part, "sessions");
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .ask(self).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One command at a time, as in `connectors_in`.
        let commands: Vec<redis::Cmd> = ids
            .iter()
            .flat_map(|sid| {
                [
                    redis::cmd("HGETALL").arg(self.key_in(part, "sx", sid)).clone(),
                    redis::cmd("HGET").arg(self.key_in(part, "sm", sid)).arg("last").clone(),
                    redis::cmd("SMEMBERS").arg(self.key_in(part, "sc", sid)).clone(),
                    redis::cmd("HGETALL").arg(self.key_in(part, "s", sid)).clone(),
                ]
            })
            .collect();
        let values: Vec<redis::Value> = try_join_all(commands.iter().map(|cmd| cmd.ask(self))).await?;
        type Row = (HashMap<String, String>, Option<i64>, Vec<String>, Vec<(String, String)>);
        let mut records = Vec::new();
        let mut expired = Vec::new();
        for (sid, row) in ids.iter().zip(values.chunks(4)) {
            let row: Row = redis::from_redis_value(redis::Value::Array(row.to_vec()))
                .map_err(|e| StoreError(format!("redis: a session record: {e}")))?;
            match record_from(sid, row.0, row.1, row.2, row.3) {
                Some(record) => records.push(record),
                None => expired.push(sid.clone()),
            }
        }
        if !expired.is_empty() {
            let _: () = redis::cmd("ZREM")
                .arg(&index)
                .arg(&expired)
                .ask(self).await?;
        }
        Ok(records)
    }
}

/// Whether `e` is a failure of the link to Redis (refused, dropped, timed out) rather than an
/// answer from it (a script error, `LOADING`, a type error).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// What a round of a sync found, from `poll.lua`'s answer (see there) to a round with
/// acknowledgement `ack`.
fn poll_reply(reply: &[String], ack: Option<u64>, wakeup: watch::Receiver<u64>) -> PollRound {
    let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
    let close_reason = |s: &str| CloseReason::parse(s);
    let drained = match field(2) {
        "unknown" => Ok(Drained { unknown: true, seq: ack.unwrap_or(0), ..Drained::default() }),
        "superseded" => Ok(Drained {
            superseded: true,
            seq: parse_u64(field(3)),
            close_reason: close_reason(field(4)),
            ..Drained::default()
        }),
        "ahead" => Err(parse_u64(field(3))),
        _ => {
            let first = parse_u64(field(3));
            let acked = parse_u64(field(4));
            let packets: Vec<QueuedPacket> = reply
                .iter()
                .skip(6)
                .zip(first..)
                .map(|(text, seq)| QueuedPacket { seq, text: text.as_str().into(), quoted: None })
                .collect();
            let seq = packets.last().map_or(acked, |p| p.seq);
            Ok(Drained { packets, seq, close_reason: close_reason(field(5)), superseded: false, unknown: false })
        }
    };
    PollRound { ticket: parse_u64(field(0)), drained, wakeup: Wakeup::Watch(wakeup) }
}

/// A command, a pipeline or a script call sent over the store's link: one round trip,
/// counted, its failure noted (`RedisStore::failed`), and refused at once while Redis is
/// known to be out of reach (`RedisStore::conn`).
trait RoundTrip {
    async fn ask<T: FromRedisValue>(&self, store: &RedisStore) -> StoreResult<T>;
}

impl RoundTrip for redis::Cmd {
    async fn ask<T: FromRedisValue>(&self, store: &RedisStore) -> StoreResult<T> {
        self.query_async(&mut store.conn()?).await.map_err(|e| store.failed(e))
    }
}

impl RoundTrip for redis::Pipeline {
    async fn ask<T: FromRedisValue>(&self, store: &RedisStore) -> StoreResult<T> {
        self.query_async(&mut store.conn()?).await.map_err(|e| store.failed(e))
    }
}

impl RoundTrip for ScriptInvocation<'_> {
    async fn ask<T: FromRedisValue>(&self, store: &RedisStore) -> StoreResult<T> {
        self.invoke_async(&mut store.conn()?).await.map_err(|e| store.failed(e))
    }
}

#[async_trait]
impl Store for RedisStore {
    /// On a Redis Cluster, first the directory: a connector id whose old connector lives in
    /// another partition is refused while that one is live, and that one is forgotten
    /// otherwise; then the admission, in the admitted set (`admit.lua`), and the directory
    /// entry; then the open in the session's partition.
    async fn open(
        &self,
        info: ConnectorInfo,
        shared_session: bool,
        max_connectors: usize,
        welcome: Arc<str>,
    ) -> StoreResult<OpenOutcome> {
        let part = self.parts.of(&info.session_id);
        let mut max = max_connectors;
        if self.parts.clustered() {
            let directory = self.key("d", &info.id);
            let old: Option<String> =
                redis::cmd("GET").arg(&directory).ask(self).await?;
            if let Some(old_part) = old.map(|sid| self.parts.of(&sid)).filter(|old| *old != part) {
                let retired: String = self
                    .invoke(&self.scripts.retire, old_part, || self.own_keys(old_part, &info.id))
                    .arg(&info.id)
                    .ask(self).await?;
                if retired == "live" {
                    return Ok(OpenOutcome::Exists);
                }
            }
            if !self.admit(&info.id, info.opened_ms, max_connectors).await? {
                return Ok(OpenOutcome::Full);
            }
            // Admitted: the partition does not count again.
            max = usize::MAX;
            let _: () = redis::cmd("SET")
                .arg(&directory)
                .arg(&info.session_id)
                .arg("PX")
                .arg(self.options.key_ttl_ms)
                .ask(self).await?;
        }
        let outcome: String = self
            .invoke(&self.scripts.open, part, || {
                let mut keys = self.own_keys(part, &info.id);
                keys.extend(["live", "active", "sessions"].iter().map(|name| self.index_in(part, name)));
                keys.extend(self.session_keys(part, &info.session_id));
                keys
            })
            .arg(&info.id)
            .arg(&info.session_id)
            .arg(&info.address)
            .arg(&info.user_agent)
            .arg(info.opened_ms)
            .arg(if shared_session { "1" } else { "0" })
            .arg(max)
            .arg(&*welcome)
            .arg(self.options.key_ttl_ms)
            .ask(self).await?;
        Ok(match outcome.as_str() {
            "opened" => {
                if self.parts.clustered() {
                    let home = Home { part, session: info.session_id.as_str().into(), refreshed_ms: info.opened_ms };
                    self.homes.lock().insert(info.id.clone(), home);
                }
                OpenOutcome::Opened
            }
            "exists" => OpenOutcome::Exists,
            _ => OpenOutcome::Full,
        })
    }

    async fn connector(&self, id: &str) -> StoreResult<Option<ConnectorInfo>> {
        let fields: Vec<Option<String>> = self
            .at_home(
                id,
                Vec::new,
                |fields: &Vec<Option<String>>| fields.first().is_some_and(Option::is_some),
                |part| self.connector_fields(part, id),
            )
            .await?;
        if fields.first().and_then(|c| c.as_deref()) != Some("") {
            return Ok(None);
        }
        Ok(info_from(id, fields.into_iter().skip(1).collect()))
    }

    async fn connectors(&self) -> StoreResult<Vec<ConnectorInfo>> {
        let parts = self.in_every_part(|part| self.connectors_in(part)).await?;
        Ok(parts.into_iter().flatten().collect())
    }

    async fn connector_count(&self) -> StoreResult<usize> {
        self.index_total("live").await
    }

    async fn session_count(&self) -> StoreResult<usize> {
        self.index_total("active").await
    }

    async fn least_recent(&self) -> StoreResult<Option<String>> {
        let oldest: Vec<Vec<(String, f64)>> = self
            .in_every_part(|part| async move {
                redis::cmd("ZRANGE")
                    .arg(self.index_in(part, "live"))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .ask(self).await
            })
            .await?;
        Ok(oldest.into_iter().flatten().min_by(|a, b| a.1.total_cmp(&b.1)).map(|(id, _)| id))
    }

    async fn touch(&self, id: &str, now_ms: i64) -> StoreResult<Option<String>> {
        self.at_home(id, || None, Option::is_some, |part| self.touch_in(part, id, now_ms, &[])).await
    }

    async fn touch_reading(
        &self,
        id: &str,
        now_ms: i64,
        keys: &[&str],
    ) -> StoreResult<Option<(String, Option<Token>)>> {
        let touched: Option<(String, Vec<Option<String>>)> =
            self.at_home(id, || None, Option::is_some, |part| self.touch_in(part, id, now_ms, keys)).await?;
        Ok(touched.map(|(session_id, stored)| (session_id, Some(session_entries(keys, stored)))))
    }

    async fn close(
        &self,
        id: &str,
        reason: CloseReason,
        notify: bool,
        farewell: Option<&str>,
    ) -> StoreResult<Option<ConnectorInfo>> {
        let fields: Option<Vec<Option<String>>> = self
            .at_home(id, || None, Option::is_some, |part| async move {
                self.invoke(&self.scripts.close, part, || self.connector_keys(part, id))
                    .arg(id)
                    .arg(reason.as_str())
                    .arg(if notify { "1" } else { "0" })
                    .arg(crate::protocol::now_ms())
                    .arg(self.options.retention_ms)
                    .arg(CLOSE_COMMAND)
                    .arg(SHARED_SESSION_LINGER_MS)
                    .arg(farewell.unwrap_or_default())
                    .arg(self.options.record_retention_ms)
                    .ask(self).await
            })
            .await?;
        self.senders.lock().remove(id);
        if fields.is_some() && self.parts.clustered() {
            // Closed by this call: it leaves the admitted set (`admit.lua`).
            let _: () = redis::cmd("ZREM")
                .arg(self.index("admitted"))
                .arg(id)
                .ask(self).await?;
        }
        Ok(fields.and_then(|f| info_from(id, f)))
    }

    async fn push(
        &self,
        id: &str,
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<PushOutcome> {
        let status = self
            .at_home(
                id,
                || "gone".to_owned(),
                |status: &String| status != "gone",
                |part| {
                    let text = &text;
                    async move {
                        let status = self.push_in(part, &[id], text, limits, once).await?;
                        Ok(status.into_iter().next().unwrap_or_default())
                    }
                },
            )
            .await?;
        Ok(match status.as_str() {
            "queued" => PushOutcome::Queued,
            "overflow" => PushOutcome::Overflow,
            _ => PushOutcome::Gone,
        })
    }

    /// On a Redis Cluster, one step per partition of the connectors (those of one session
    /// share one).
    async fn push_many(
        &self,
        ids: &[String],
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let homes = try_join_all(ids.iter().map(|id| self.home(id))).await?;
        let mut by_part: Vec<Vec<&str>> = vec![Vec::new(); self.parts.len()];
        for (id, home) in ids.iter().zip(homes) {
            // A connector of no partition is gone.
            if let Some(part) = home {
                by_part[part].push(id);
            }
        }
        let statuses = self
            .in_every_part(|part| {
                let ids = &by_part[part];
                let text = &text;
                async move {
                    let status = match ids.is_empty() {
                        true => Vec::new(),
                        false => self.push_in(part, ids, text, limits, once).await?,
                    };
                    Ok(ids.iter().zip(status).filter(|(_, s)| s == "overflow").map(|(id, _)| id.to_string()).collect::<Vec<_>>())
                }
            })
            .await?;
        Ok(statuses.into_iter().flatten().collect())
    }

    /// One step per partition (and per [`PUSH_CHUNK`] connectors).
    async fn push_all(
        &self,
        except: Option<&str>,
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Fanout> {
        let fanouts = self
            .in_every_part(|part| {
                let text = &text;
                async move {
                    let mut ids = self.live_ids(part).await?;
                    ids.retain(|id| Some(id.as_str()) != except);
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    // The push script skips connectors closed since the listing.
                    let status = self.push_in(part, &refs, text, limits, once).await?;
                    let overflowed: Vec<String> =
                        ids.iter().zip(status).filter(|(_, s)| s == "overflow").map(|(id, _)| id.clone()).collect();
                    Ok(Fanout { queued: ids.len() - overflowed.len(), overflowed })
                }
            })
            .await?;
        let mut all = Fanout::default();
        for fanout in fanouts {
            all.queued += fanout.queued;
            all.overflowed.extend(fanout.overflowed);
        }
        Ok(all)
    }

    /// The wake-up is made before the script runs, so a packet queued after the drain is not
    /// missed. A sync that begins wakes an older one held on this node itself, after the
    /// script (it woke other nodes'), and does not count that wake-up as its own: unless
    /// something else fired it since it was made.
    async fn poll_round(
        &self,
        id: &str,
        ack: Option<u64>,
        ticket: Option<u64>,
        now_ms: i64,
        waited: bool,
    ) -> StoreResult<PollRound> {
        let mut wakeup = subscribe(&self.waiters, id);
        let (_, reply) = self.poll_script(id, ack, ticket, now_ms, waited, false).await?;
        if ticket.is_none() {
            self.wake_older_here(id, &mut wakeup);
        }
        Ok(poll_reply(&reply, ack, wakeup))
    }

    /// Every round first, with the other nodes to wake named in the answers instead of woken
    /// by the scripts; then one message per node and partition, and the polls held here.
    async fn begin_polls(&self, carried: &[(&str, Option<u64>)], now_ms: i64) -> StoreResult<Vec<PollRound>> {
        let mut wakeups: Vec<_> = carried.iter().map(|(id, _)| subscribe(&self.waiters, id)).collect();
        let replies =
            try_join_all(carried.iter().map(|(id, ack)| self.poll_script(id, *ack, None, now_ms, false, true))).await?;
        let mut messages: HashMap<(usize, &str), Vec<&str>> = HashMap::new();
        for ((id, _), (part, reply)) in carried.iter().zip(&replies) {
            if let Some(holder) = reply.get(1).filter(|holder| !holder.is_empty()) {
                messages.entry((*part, holder.as_str())).or_default().push(id);
            }
        }
        let publish = if self.parts.clustered() { "SPUBLISH" } else { "PUBLISH" };
        try_join_all(messages.into_iter().map(|((part, holder), ids)| {
            let channel = format!("{}n:{holder}", self.parts.prefix(part));
            async move { redis::cmd(publish).arg(channel).arg(ids.join(" ")).ask::<()>(self).await }
        }))
        .await?;
        for ((id, _), wakeup) in carried.iter().zip(wakeups.iter_mut()) {
            self.wake_older_here(id, wakeup);
        }
        Ok(carried
            .iter()
            .zip(replies)
            .zip(wakeups)
            .map(|(((_, ack), (_, reply)), wakeup)| poll_reply(&reply, *ack, wakeup))
            .collect())
    }

    fn wake_all(&self) {
        wake_all(&self.waiters);
    }

    fn sends_in_one_step(&self) -> bool {
        true
    }

    /// `send.lua`, with the session id, version and rights this node cached for the
    /// requester. A cache that does not match (the first send through this node, or the
    /// session written to since) costs a second round trip: the script answers the current
    /// entries instead of acting, and the send is decided again on them. On a Redis Cluster,
    /// a send to a connector of another partition is not taken in one step
    /// ([`SendStepped::Split`]); a target of no partition is not live, as the script finds.
    async fn send_step(&self, step: &SendStep<'_>) -> StoreResult<SendStepped> {
        let Some(mut part) = self.home(step.id).await? else { return Ok(SendStepped::Unknown) };
        if self.parts.clustered() {
            for (target, _) in step.packets.iter().filter(|(target, _)| *target != step.id) {
                if self.home(target).await?.is_some_and(|home| home != part) {
                    return Ok(SendStepped::Split);
                }
            }
        }
        // The body is recorded only for a seq.
        let body = match step.body.filter(|_| step.seq.is_some()) {
            Some(b) => format!("+{b}"),
            None => "-".to_owned(),
        };
        // A session written to between each read and the next step: give up after a few.
        for _ in 0..4 {
            let (session_id, version, allowed) = match self.senders.lock().get_mut(step.id) {
                Some(sender) => {
                    sender.used_ms = step.now_ms;
                    (sender.session_id.clone(), sender.version.clone(), (step.allowed)(&sender.rights))
                }
                // No session id is empty: the script answers `stale`.
                None => (String::new(), String::new(), false),
            };
            let mut call = self.invoke(&self.scripts.send, part, || {
                let mut keys = self.connector_keys(part, step.id);
                if let Some(seq) = step.seq {
                    keys.push(self.key_in(part, "once", &format!("{}:{seq}", step.id)));
                }
                for (target, _) in step.packets.iter().filter(|(target, _)| *target != step.id) {
                    keys.push(self.key_in(part, "c", target));
                    keys.push(self.key_in(part, "q", target));
                }
                keys
            });
            call.arg(step.id)
                .arg(step.now_ms)
                .arg(self.options.key_ttl_ms)
                .arg(self.record_since(step.now_ms))
                .arg(&session_id)
                .arg(&version)
                .arg(if allowed { "1" } else { "" })
                .arg(step.seq.map(|s| s.to_string()).unwrap_or_default())
                .arg(SEND_LEASE_MS)
                .arg(SEND_RESPONSES_KEPT)
                .arg(&body)
                .arg(step.limits.max_packets)
                .arg(step.limits.max_bytes)
                .arg(step.rights_keys.len())
                .arg(step.rights_keys);
            for (target, text) in step.packets {
                call.arg(*target).arg(*text);
            }
            let reply: Vec<String> = call.ask(self).await?;
            let mut reply = reply.into_iter();
            let outcome = match reply.next().as_deref() {
                Some("stale") => {
                    let session_id = reply.next().unwrap_or_default();
                    let version = reply.next().unwrap_or_default();
                    let stored = reply.map(|v| Some(v).filter(|v| !v.is_empty())).collect();
                    let rights = session_entries(step.rights_keys, stored);
                    let sender = Sender { session_id, version, rights, used_ms: step.now_ms };
                    self.senders.lock().insert(step.id.to_owned(), sender);
                    continue;
                }
                Some("unknown") => {
                    self.senders.lock().remove(step.id);
                    match self.moved(step.id, part).await? {
                        Some(home) => {
                            part = home;
                            continue;
                        }
                        None => SendStepped::Unknown,
                    }
                }
                Some("busy") => SendStepped::InProgress,
                Some("forgotten") => SendStepped::Forgotten,
                Some("replay") => {
                    let stored = reply.next().unwrap_or_default();
                    SendStepped::Replay(stored.strip_prefix('+').map(str::to_owned))
                }
                Some("denied") => SendStepped::Denied,
                Some("gone") => SendStepped::NoTarget,
                Some("ok") => SendStepped::Done { overflowed: reply.collect() },
                other => return Err(StoreError(format!("redis: send.lua answered {other:?}"))),
            };
            return Ok(outcome);
        }
        Err(StoreError("redis: the session kept changing during a send".into()))
    }

    async fn session_storage(&self, session_id: &str) -> StoreResult<Token> {
        let stored: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key_in(self.parts.of(session_id), "s", session_id))
            .ask(self).await?;
        Ok(storage_from(stored))
    }

    async fn session_get(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>> {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(self.key_in(self.parts.of(session_id), "s", session_id))
            .arg(key)
            .ask(self).await?;
        Ok(stored.and_then(|s| split_stored(&s)).map(|(_, v)| v))
    }

    async fn session_read(
        &self,
        session_id: &str,
        keys: &[&str],
        read: &mut (dyn for<'t> FnMut(&'t Token) + Send),
    ) -> StoreResult<()> {
        let stored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key_in(self.parts.of(session_id), "s", session_id))
            .arg(keys)
            .ask(self).await?;
        read(&session_entries(keys, stored));
        Ok(())
    }

    async fn session_put(&self, session_id: &str, key: &str, value: Value) -> StoreResult<()> {
        self.session_op(session_id, "put", &[key, &value.to_string()]).await?;
        Ok(())
    }

    async fn session_remove(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>> {
        let old = self.session_op(session_id, "remove", &[key]).await?;
        Ok(match old {
            redis::Value::BulkString(json) => serde_json::from_slice(&json).ok(),
            _ => None,
        })
    }

    async fn session_clear(&self, session_id: &str) -> StoreResult<()> {
        self.session_op(session_id, "clear", &[]).await?;
        Ok(())
    }

    async fn session_login(&self, session_id: &str, entries: Token) -> StoreResult<bool> {
        let flat: Vec<String> = entries.into_iter().flat_map(|(k, v)| [k, v.to_string()]).collect();
        let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
        Ok(matches!(self.session_op(session_id, "login", &refs).await?, redis::Value::Int(1)))
    }

    async fn session_connectors(&self, session_id: &str) -> StoreResult<Vec<String>> {
        redis::cmd("SMEMBERS")
            .arg(self.key_in(self.parts.of(session_id), "sc", session_id))
            .ask(self).await
    }

    async fn session_records(&self) -> StoreResult<Vec<SessionRecord>> {
        let parts = self.in_every_part(|part| self.session_records_in(part)).await?;
        Ok(parts.into_iter().flatten().collect())
    }

    async fn forget_session(&self, session_id: &str) -> StoreResult<bool> {
        let part = self.parts.of(session_id);
        let (deleted,): (usize,) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.key_in(part, "sx", session_id))
            .arg(self.key_in(part, "sm", session_id))
            .arg(self.key_in(part, "s", session_id))
            .arg(self.key_in(part, "sc", session_id))
            .cmd("ZREM")
            .arg(self.index_in(part, "sessions"))
            .arg(session_id)
            .ignore()
            .cmd("ZREM")
            .arg(self.index_in(part, "active"))
            .arg(session_id)
            .ignore()
            .ask(self).await?;
        Ok(deleted > 0)
    }

    async fn queue_depths(&self, ids: &[String]) -> StoreResult<Vec<usize>> {
        try_join_all(ids.iter().map(|id| async move {
            let Some(part) = self.home(id).await? else { return Ok(0) };
            redis::cmd("LLEN")
                .arg(self.key_in(part, "q", id))
                .ask(self).await
        }))
        .await
    }

    async fn expired_sessions(&self, idle_before_ms: i64) -> StoreResult<Vec<String>> {
        let parts: Vec<Vec<String>> = self
            .in_every_part(|part| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.index_in(part, "active"))
                    .arg("-inf")
                    .arg(format!("({idle_before_ms}"))
                    .ask(self).await
            })
            .await?;
        Ok(parts.into_iter().flatten().collect())
    }

    async fn sweep(&self, now_ms: i64, _retention_ms: i64, _record_retention_ms: i64) -> StoreResult<()> {
        // Closed connectors and lingering sessions expire in Redis by themselves. What is
        // left: index entries of connectors whose keys expired while no node ran (their last
        // activity is older than the key expiry), and what this node keeps for nobody.
        let stale = format!("({}", now_ms - self.options.key_ttl_ms);
        let indexes = (0..self.parts.len()).flat_map(|part| [self.index_in(part, "live"), self.index_in(part, "active")]);
        try_join_all(indexes.map(|index| {
            let stale = &stale;
            async move {
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(index)
                    .arg("-inf")
                    .arg(stale)
                    .ask::<()>(self).await
            }
        }))
        .await?;
        self.waiters.lock().retain(|_, tx| tx.receiver_count() > 0);
        let unused_since = now_ms - self.options.key_ttl_ms;
        self.senders.lock().retain(|_, sender| sender.used_ms > unused_since);
        self.homes.lock().retain(|_, home| home.refreshed_ms > unused_since);
        Ok(())
    }

    async fn claim_send(&self, id: &str, seq: u64) -> StoreResult<SendClaim> {
        let now = crate::protocol::now_ms().to_string();
        let reply = self.sends_op(id, "claim", seq, &[&now, &SEND_LEASE_MS.to_string()]).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("busy") => SendClaim::InProgress,
            Some("forgotten") => SendClaim::Forgotten,
            Some("replay") => {
                let stored = reply.get(1).map(String::as_str).unwrap_or("-");
                SendClaim::Replay(stored.strip_prefix('+').map(str::to_owned))
            }
            _ => SendClaim::Fresh,
        })
    }

    async fn complete_send(&self, id: &str, seq: u64, body: Option<String>) -> StoreResult<()> {
        let stored = match body {
            Some(b) => format!("+{b}"),
            None => "-".to_owned(),
        };
        self.sends_op(id, "complete", seq, &[&stored, &SEND_RESPONSES_KEPT.to_string()]).await?;
        // Done: its `once` records in other partitions go as its own did (`sends.lua`).
        let record = format!("{id}:{seq}");
        let elsewhere = self.once_elsewhere.lock().remove(&record).unwrap_or_default();
        try_join_all(elsewhere.into_iter().map(|part| {
            let key = self.key_in(part, "once", &record);
            async move { redis::cmd("DEL").arg(key).ask::<()>(self).await }
        }))
        .await?;
        Ok(())
    }

    /// The send's `once` records stay for its retry, which may run on another node; those in
    /// other partitions then expire with the connector's keys.
    async fn release_send(&self, id: &str, seq: u64) -> StoreResult<()> {
        self.once_elsewhere.lock().remove(&format!("{id}:{seq}"));
        self.sends_op(id, "release", seq, &[]).await?;
        Ok(())
    }

    async fn count_event(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<u32> {
        let k = self.key("ev", key);
        let member = format!("{now_ms}:{:x}", rand::random::<u64>());
        let (count,): (u32,) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&k)
            .arg(now_ms)
            .arg(member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k)
            .arg("-inf")
            .arg(now_ms - window_ms)
            .ignore()
            .cmd("ZCARD")
            .arg(&k)
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(COUNTER_TTL_MS)
            .ignore()
            .ask(self).await?;
        Ok(count)
    }

    async fn recent_events(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<(u32, i64)> {
        let times: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("ev", key))
            .arg(format!("({}", now_ms - window_ms))
            .arg("+inf")
            .arg("WITHSCORES")
            .ask(self).await?;
        let oldest = times.first().map_or(now_ms, |(_, t)| *t as i64 + window_ms);
        Ok((times.len() as u32, oldest))
    }

    /// A real round trip even while Redis is marked out of reach (a probe: see `down`).
    async fn ping(&self) -> StoreResult<()> {
        self.probed(redis::cmd("PING").query_async::<String>(&mut self.probe_conn()).await)?;
        Ok(())
    }

    /// A probe (see `down`): it goes to Redis even while marked out of reach, and once it
    /// succeeds requests make their round trips again.
    async fn heartbeat(&self, now_ms: i64) -> StoreResult<()> {
        let nodes = self.index("nodes");
        let result: Result<(), RedisError> = redis::pipe()
            .cmd("ZADD")
            .arg(&nodes)
            .arg(now_ms)
            .arg(&self.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&nodes)
            .arg("-inf")
            .arg(now_ms - NODE_ALIVE_MS)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&nodes)
            .arg(self.options.key_ttl_ms)
            .ignore()
            .query_async(&mut self.probe_conn())
            .await;
        self.probed(result)?;
        if self.parts.clustered() {
            // The admitted set lives as long as some node does (`admit.lua`).
            let _: () = redis::cmd("PEXPIRE")
                .arg(self.index("admitted"))
                .arg(self.options.key_ttl_ms)
                .ask(self).await?;
        }
        Ok(())
    }

    async fn other_nodes(&self, now_ms: i64) -> StoreResult<usize> {
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.index("nodes"))
            .arg(now_ms - NODE_ALIVE_MS)
            .arg("+inf")
            .ask(self).await?;
        Ok(nodes.iter().filter(|n| **n != self.node).count())
    }

    async fn leave(&self) -> StoreResult<()> {
        let _: () = redis::cmd("ZREM")
            .arg(self.index("nodes"))
            .arg(&self.node)
            .ask(self).await?;
        Ok(())
    }
}
