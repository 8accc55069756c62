//! The Redis store: every node of a cluster keeps its state in one Redis server, so any node
//! can answer any request of any connector.
//!
//! Every method that reads and writes is one Lua script (`lua/*.lua`), which Redis runs
//! atomically: no read-then-delete race between nodes, no lost update. Keys are built from
//! `redis_prefix` (so one Redis can serve several clusters, and the tests):
//!
//! | key | type | what |
//! |---|---|---|
//! | `c:{id}` | hash | a connector: session, address, user agent, times, `closed`, poll `ticket` and `holder` node, queue `last`/`acked`/`bytes`, `sendlast`, `sendfloor` (highest forgotten send) |
//! | `q:{id}` | list | its queued packets; the first has sequence number `acked + 1` |
//! | `sp:{id}` `sr:{id}` `so:{id}` | hash, hash, zset | idempotent sends: in progress (since when), kept responses, their order |
//! | `once:{id}:{seq}` | hash | the packets an idempotent send in progress queued, so a re-run does not queue them twice; deleted when it completes |
//! | `live` | zset | live connectors by last activity (admission count, eviction) |
//! | `sm:{sid}` `s:{sid}` `sc:{sid}` | hash, hash, set | a session: meta (`last`, `shared`, `empty`, `v`: its storage's version), storage, connectors |
//! | `sx:{sid}` | hash | a session's record for the admin API (`opened`, `addr`, `ua`, `user`, `closed`, `last`), kept after it closes |
//! | `sessions` | zset | session ids by open time (the admin API's list; pruned as records expire) |
//! | `active` | zset | sessions with live connectors by last request (the reaper) |
//! | `ev:{key}` | zset | event times of a counter (failed logins) |
//! | `nodes` | zset | nodes by last heartbeat |
//!
//! Everything carries an expiry, refreshed while it is in use, so nothing is left behind when
//! every node is gone. Wake-ups: a sync that waits records its node as the connector's
//! `holder` (one that answers clears it); a script that changes the connector publishes the
//! connector id on that node's channel (`n:{node}`), and the node's one subscriber task
//! signals the local `watch` channel of the held poll. When that subscription is lost, every
//! local poll is woken, so none sleeps through a packet queued meanwhile.
//!
//! Round trips. All requests of a node share one connection ([`ConnectionManager`], a
//! reconnecting `MultiplexedConnection`): concurrent commands are written one after the
//! other without waiting for each other's answers and answered in order (pipelined as they
//! come, not batched by a timer), so a busy node costs Redis a read and a write per batch,
//! not per command. On the common path a long-poll echo is two of them: a `send` of the
//! system plugin is one script ([`Store::send_step`], `send.lua`: touch, claim, rights,
//! queue, response record, wake-up), a `sync` round is one (`poll.lua`: touch, ack, drain,
//! holder).
//!
//! What the node caches ([`RedisStore::senders`]), per connector that sends through it:
//! its session id and that session's rights entries, with the session's version. A
//! connector's session id never changes while it lives; a connector id reopened with another
//! session is seen by `send.lua`, which compares the cached id with the connector's hash. The
//! rights change with the session's storage (a login, a logout, a `sessionPut` on any node):
//! every write to it increments its version (`sm:{sid}` field `v`, set to a new value when
//! the session is made, so a session made again under the same id does not match an old
//! entry), and `send.lua` acts on the cached rights only if the version is still the one
//! cached; otherwise it does nothing and answers the current entries, and the send is decided
//! again. So a rights check is never older than the send it allows. Entries go when this
//! node closes the connector, when Redis answers that the connector is gone, and in the
//! reaper's sweep once unused for the key expiry. The source id and address binding are kept
//! per client connection by [`crate::http`] and never reach the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

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

/// The scripts, loaded once (redis-rs sends EVALSHA and falls back to EVAL).
struct Scripts {
    open: Script,
    touch: Script,
    close: Script,
    push: Script,
    poll: Script,
    sends: Script,
    session: Script,
    send: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            open: Script::new(include_str!("lua/open.lua")),
            touch: Script::new(concat!(include_str!("lua/touch_fn.lua"), include_str!("lua/touch.lua"))),
            close: Script::new(include_str!("lua/close.lua")),
            push: Script::new(include_str!("lua/push.lua")),
            poll: Script::new(concat!(include_str!("lua/touch_fn.lua"), include_str!("lua/poll.lua"))),
            sends: Script::new(include_str!("lua/sends.lua")),
            session: Script::new(include_str!("lua/session.lua")),
            send: Script::new(concat!(include_str!("lua/touch_fn.lua"), include_str!("lua/send.lua"))),
        }
    }
}

/// The wake-up channels of the polls held on this node, by connector id.
type Waiters = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

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

/// Where to find Redis and how long things live there.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
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
    conn: ConnectionManager,
    scripts: Scripts,
    options: RedisOptions,
    /// This node's id (random per process): the channel its held polls are woken on.
    node: String,
    /// Local held polls by connector id.
    waiters: Waiters,
    /// The connectors that send through this node, by connector id: what `send.lua` needs
    /// from the node to decide a send in one round trip. Locked only to read or replace an
    /// entry, never across a round trip.
    senders: Mutex<HashMap<String, Sender>>,
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
}

fn store_error(e: RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// Prepares the store and starts the wake-up subscriber. Redis need not be up yet: until
    /// it is, requests fail with [`StoreError`] (503), and the node recovers by itself.
    pub fn new(options: RedisOptions, meter: StoreMeter) -> StoreResult<Arc<RedisStore>> {
        let client = redis::Client::open(options.url.as_str()).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config).map_err(store_error)?;
        let node = format!("{:016x}", rand::random::<u64>());
        let channel = format!("{}n:{node}", options.prefix);
        let waiters: Waiters = Default::default();
        let stop = CancellationToken::new();
        tokio::spawn(subscriber(client, channel, waiters.clone(), stop.clone()));
        let scripts = Scripts::new();
        let _subscriber = stop.drop_guard();
        let down = AtomicBool::new(false);
        let senders = Mutex::default();
        Ok(Arc::new(RedisStore { conn, scripts, options, node, waiters, senders, _subscriber, meter, down }))
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.options.prefix)
    }

    /// A key shared by all connectors (`live`, `active`, `nodes`).
    fn index(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    /// The touch script (`touch.lua`) for a request of `id`, reading `keys` of its session.
    fn touch_invocation(&self, id: &str, now_ms: i64, keys: &[&str]) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.touch.prepare_invoke();
        invocation
            .arg(&self.options.prefix)
            .arg(id)
            .arg(now_ms)
            .arg(self.options.key_ttl_ms)
            .arg(self.options.touch_granularity_ms)
            .arg(keys);
        invocation
    }

    /// The live connectors, least recently active first, up to index `last` (-1: all).
    async fn live_ids(&self, last: i64) -> StoreResult<Vec<String>> {
        redis::cmd("ZRANGE")
            .arg(self.index("live"))
            .arg(0)
            .arg(last)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    /// The connection for one round trip (counted), or at once the store error while Redis is
    /// known to be out of reach (counted as an error, not as a round trip; see `down`).
    fn conn(&self) -> StoreResult<ConnectionManager> {
        if self.down.load(Ordering::Relaxed) {
            self.meter.errors.inc();
            return Err(StoreError("redis: unreachable (failing fast until it answers a probe)".into()));
        }
        Ok(self.probe_conn())
    }

    /// The connection for a probe (the heartbeat, `/readyz`): it goes to Redis even while
    /// `down`, and its outcome sets `down` (see [`RedisStore::probed`]).
    fn probe_conn(&self) -> ConnectionManager {
        self.meter.round_trips.inc();
        self.conn.clone()
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

    /// One step of `sends.lua` (claim, complete or release the idempotent send `seq`).
    async fn sends_op(&self, id: &str, op: &str, seq: u64, args: &[&str]) -> StoreResult<Vec<String>> {
        let mut call = self.scripts.sends.prepare_invoke();
        call.arg(&self.options.prefix).arg(id).arg(op).arg(seq);
        for a in args {
            call.arg(*a);
        }
        call.invoke_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn session_op(&self, session_id: &str, op: &str, args: &[&str]) -> StoreResult<redis::Value> {
        let mut call = self.scripts.session.prepare_invoke();
        call.arg(&self.options.prefix).arg(session_id).arg(op);
        for a in args {
            call.arg(*a);
        }
        call.invoke_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn push_ids(
        &self,
        ids: &[&str],
        text: &str,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let mut call = self.scripts.push.prepare_invoke();
        call.arg(&self.options.prefix).arg(text).arg(limits.max_packets).arg(limits.max_bytes);
        // A send cut by a dying node may be re-run as long as its connector lives: its once keys
        // live as long (a completed send deletes its own at once).
        call.arg(once.unwrap_or_default()).arg(self.options.key_ttl_ms);
        for id in ids {
            call.arg(*id);
        }
        call.invoke_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }
}

/// Holds this node's subscription and wakes local polls; reconnects until `stop`.
async fn subscriber(client: redis::Client, channel: String, waiters: Waiters, stop: CancellationToken) {
    stop.run_until_cancelled(subscribe_forever(client, channel, waiters)).await;
}

/// Fires every wake-up made on this node.
fn wake_all(waiters: &Waiters) {
    for tx in waiters.lock().values() {
        wake(tx);
    }
}

/// A wake-up for the next change of connector `id` seen on this node.
fn subscribe(waiters: &Waiters, id: &str) -> watch::Receiver<u64> {
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
fn wake(tx: &watch::Sender<u64>) {
    tx.send_modify(|v| *v = v.wrapping_add(1));
}

async fn subscribe_forever(client: redis::Client, channel: String, waiters: Waiters) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    // Whatever was published while we were not listening is missed: re-check.
                    wake_all(&waiters);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
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
                    tracing::warn!("redis subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "redis subscribe failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "redis unreachable for wake-ups; retrying"),
        }
        // Polls held here answer now (their drain reports the store's state or error).
        wake_all(&waiters);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether `e` is a failure of the link to Redis (refused, dropped, timed out) rather than an
/// answer from it (a script error, `LOADING`, a type error).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn parse_u64(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

/// A session value as stored: `<insertion index>:<json>`.
fn split_stored(stored: &str) -> Option<(u64, Value)> {
    let (idx, json) = stored.split_once(':')?;
    Some((idx.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// The entries of `keys` that are set, from their stored values (`HMGET`'s answer).
fn session_entries(keys: &[&str], stored: Vec<Option<String>>) -> Token {
    keys.iter().zip(stored).filter_map(|(key, v)| Some((key.to_string(), split_stored(&v?)?.1))).collect()
}

/// A session's storage from its hash, in insertion order.
fn storage_from(stored: Vec<(String, String)>) -> Token {
    let mut entries: Vec<(u64, String, Value)> =
        stored.into_iter().filter_map(|(k, v)| split_stored(&v).map(|(idx, value)| (idx, k, value))).collect();
    entries.sort_by_key(|(idx, _, _)| *idx);
    entries.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// A session's record from its `sx`, `sm.last`, `sc` and `s` keys; `None` once it expired.
fn record_from(
    id: &str,
    record: HashMap<String, String>,
    last: Option<i64>,
    connectors: Vec<String>,
    storage: Vec<(String, String)>,
) -> Option<SessionRecord> {
    let number = |field: &str| record.get(field).and_then(|v| v.parse::<i64>().ok());
    let open_ms = number("opened")?;
    let close_ms = number("closed");
    Some(SessionRecord {
        id: id.to_owned(),
        user_name: record.get("user").and_then(|u| serde_json::from_str(u).ok()),
        active: !connectors.is_empty(),
        open_ms,
        request_ms: last.or(number("last")).unwrap_or(open_ms),
        close_ms,
        address: record.get("addr").cloned().unwrap_or_default(),
        client: record.get("ua").cloned().unwrap_or_default(),
        connectors,
        data: storage_from(storage),
    })
}

fn info_from(id: &str, fields: Vec<Option<String>>) -> Option<ConnectorInfo> {
    let mut f = fields.into_iter();
    let mut next = || f.next().flatten().unwrap_or_default();
    Some(ConnectorInfo {
        id: id.to_owned(),
        session_id: next(),
        address: next(),
        user_agent: next(),
        opened_ms: next().parse().ok()?,
        last_active_ms: next().parse().ok()?,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn open(
        &self,
        info: ConnectorInfo,
        shared_session: bool,
        max_connectors: usize,
        welcome: Arc<str>,
    ) -> StoreResult<OpenOutcome> {
        let outcome: String = self
            .scripts
            .open
            .prepare_invoke()
            .arg(&self.options.prefix)
            .arg(&info.id)
            .arg(&info.session_id)
            .arg(&info.address)
            .arg(&info.user_agent)
            .arg(info.opened_ms)
            .arg(if shared_session { "1" } else { "0" })
            .arg(max_connectors)
            .arg(&*welcome)
            .arg(self.options.key_ttl_ms)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(match outcome.as_str() {
            "opened" => OpenOutcome::Opened,
            "exists" => OpenOutcome::Exists,
            _ => OpenOutcome::Full,
        })
    }

    async fn connector(&self, id: &str) -> StoreResult<Option<ConnectorInfo>> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("c", id))
            .arg(&["closed", "sid", "addr", "ua", "opened", "active"])
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        if fields.first().and_then(|c| c.as_deref()) != Some("") {
            return Ok(None);
        }
        Ok(info_from(id, fields.into_iter().skip(1).collect()))
    }

    async fn connectors(&self) -> StoreResult<Vec<ConnectorInfo>> {
        let ids = self.live_ids(-1).await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(self.key("c", id)).arg(&["closed", "sid", "addr", "ua", "opened", "active"]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter(|(_, row)| row.first().and_then(|c| c.as_deref()) == Some(""))
            .filter_map(|(id, row)| info_from(id, row.into_iter().skip(1).collect()))
            .collect())
    }

    async fn connector_count(&self) -> StoreResult<usize> {
        redis::cmd("ZCARD").arg(self.index("live")).query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn session_count(&self) -> StoreResult<usize> {
        redis::cmd("ZCARD").arg(self.index("active")).query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn least_recent(&self) -> StoreResult<Option<String>> {
        let ids = self.live_ids(0).await?;
        Ok(ids.into_iter().next())
    }

    async fn touch(&self, id: &str, now_ms: i64) -> StoreResult<Option<String>> {
        self.touch_invocation(id, now_ms, &[]).invoke_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn touch_reading(
        &self,
        id: &str,
        now_ms: i64,
        keys: &[&str],
    ) -> StoreResult<Option<(String, Option<Token>)>> {
        let touched: Option<(String, Vec<Option<String>>)> = self
            .touch_invocation(id, now_ms, keys)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
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
            .scripts
            .close
            .prepare_invoke()
            .arg(&self.options.prefix)
            .arg(id)
            .arg(reason.as_str())
            .arg(if notify { "1" } else { "0" })
            .arg(crate::protocol::now_ms())
            .arg(self.options.retention_ms)
            .arg(CLOSE_COMMAND)
            .arg(SHARED_SESSION_LINGER_MS)
            .arg(farewell.unwrap_or_default())
            .arg(self.options.record_retention_ms)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        self.senders.lock().remove(id);
        Ok(fields.and_then(|f| info_from(id, f)))
    }

    async fn push(
        &self,
        id: &str,
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<PushOutcome> {
        let status = self.push_ids(&[id], &text, limits, once).await?;
        Ok(match status.first().map(String::as_str) {
            Some("queued") => PushOutcome::Queued,
            Some("overflow") => PushOutcome::Overflow,
            _ => PushOutcome::Gone,
        })
    }

    async fn push_many(
        &self,
        ids: &[String],
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let mut overflowed = Vec::new();
        // Bounded scripts: a huge broadcast must not stall Redis for everyone else.
        for chunk in ids.chunks(1000) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let status = self.push_ids(&refs, &text, limits, once).await?;
            overflowed.extend(chunk.iter().zip(status).filter(|(_, s)| s == "overflow").map(|(id, _)| id.clone()));
        }
        Ok(overflowed)
    }

    async fn push_all(
        &self,
        except: Option<&str>,
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Fanout> {
        let mut ids = self.live_ids(-1).await?;
        ids.retain(|id| Some(id.as_str()) != except);
        // The push script skips connectors closed since the listing.
        let overflowed = self.push_many(&ids, text, limits, once).await?;
        Ok(Fanout { queued: ids.len() - overflowed.len(), overflowed })
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
        let reply: Vec<String> = self
            .scripts
            .poll
            .prepare_invoke()
            .arg(&self.options.prefix)
            .arg(id)
            .arg(ticket.map(|t| t.to_string()).unwrap_or_default())
            .arg(ack.map(|a| a.to_string()).unwrap_or_default())
            .arg(now_ms)
            .arg(if waited { "1" } else { "" })
            .arg(&self.node)
            .arg(self.options.key_ttl_ms)
            .arg(self.options.touch_granularity_ms)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        if ticket.is_none() {
            if let Some(tx) = self.waiters.lock().get(id) {
                // Every wake-up is sent under this lock: nothing can slip in between.
                let fired_since = wakeup.has_changed().unwrap_or(true);
                wake(tx);
                if !fired_since {
                    wakeup.mark_unchanged();
                }
            }
        }
        let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
        let close_reason = |s: &str| CloseReason::parse(s);
        let drained = match field(1) {
            "unknown" => Ok(Drained { unknown: true, seq: ack.unwrap_or(0), ..Drained::default() }),
            "superseded" => Ok(Drained {
                superseded: true,
                seq: parse_u64(field(2)),
                close_reason: close_reason(field(3)),
                ..Drained::default()
            }),
            "ahead" => Err(parse_u64(field(2))),
            _ => {
                let first = parse_u64(field(2));
                let acked = parse_u64(field(3));
                let packets: Vec<QueuedPacket> = reply
                    .iter()
                    .skip(5)
                    .zip(first..)
                    .map(|(text, seq)| QueuedPacket { seq, text: text.as_str().into(), quoted: None })
                    .collect();
                let seq = packets.last().map_or(acked, |p| p.seq);
                Ok(Drained { packets, seq, close_reason: close_reason(field(4)), superseded: false, unknown: false })
            }
        };
        Ok(PollRound { ticket: parse_u64(field(0)), drained, wakeup: Wakeup::Watch(wakeup) })
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
    /// entries instead of acting, and the send is decided again on them.
    async fn send_step(&self, step: &SendStep<'_>) -> StoreResult<SendStepped> {
        let body = match step.body {
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
            let mut call = self.scripts.send.prepare_invoke();
            call.arg(&self.options.prefix)
                .arg(step.id)
                .arg(step.now_ms)
                .arg(self.options.key_ttl_ms)
                .arg(self.options.touch_granularity_ms)
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
            let reply: Vec<String> = call.invoke_async(&mut self.conn()?).await.map_err(|e| self.failed(e))?;
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
                    SendStepped::Unknown
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
            .arg(self.key("s", session_id))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(storage_from(stored))
    }

    async fn session_get(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>> {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(self.key("s", session_id))
            .arg(key)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(stored.and_then(|s| split_stored(&s)).map(|(_, v)| v))
    }

    async fn session_read(
        &self,
        session_id: &str,
        keys: &[&str],
        read: &mut (dyn for<'t> FnMut(&'t Token) + Send),
    ) -> StoreResult<()> {
        let stored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("s", session_id))
            .arg(keys)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
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
            .arg(self.key("sc", session_id))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn session_records(&self) -> StoreResult<Vec<SessionRecord>> {
        let index = self.index("sessions");
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &ids {
            pipe.cmd("HGETALL").arg(self.key("sx", sid));
            pipe.cmd("HGET").arg(self.key("sm", sid)).arg("last");
            pipe.cmd("SMEMBERS").arg(self.key("sc", sid));
            pipe.cmd("HGETALL").arg(self.key("s", sid));
        }
        type Row = (HashMap<String, String>, Option<i64>, Vec<String>, Vec<(String, String)>);
        let values: Vec<redis::Value> = pipe.query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))?;
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
                .query_async(&mut self.conn()?)
                .await
                .map_err(|e| self.failed(e))?;
        }
        Ok(records)
    }

    async fn forget_session(&self, session_id: &str) -> StoreResult<bool> {
        let (deleted,): (usize,) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.key("sx", session_id))
            .arg(self.key("sm", session_id))
            .arg(self.key("s", session_id))
            .arg(self.key("sc", session_id))
            .cmd("ZREM")
            .arg(self.index("sessions"))
            .arg(session_id)
            .ignore()
            .cmd("ZREM")
            .arg(self.index("active"))
            .arg(session_id)
            .ignore()
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(deleted > 0)
    }

    async fn queue_depths(&self, ids: &[String]) -> StoreResult<Vec<usize>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("LLEN").arg(self.key("q", id));
        }
        pipe.query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))
    }

    async fn expired_sessions(&self, idle_before_ms: i64) -> StoreResult<Vec<String>> {
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.index("active"))
            .arg("-inf")
            .arg(format!("({idle_before_ms}"))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn sweep(&self, now_ms: i64, _retention_ms: i64, _record_retention_ms: i64) -> StoreResult<()> {
        // Closed connectors and lingering sessions expire in Redis by themselves. What is
        // left: index entries of connectors whose keys expired while no node ran (their last
        // activity is older than the key expiry), and local channels nobody waits on.
        let stale = format!("({}", now_ms - self.options.key_ttl_ms);
        let _: () = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.index("live"))
            .arg("-inf")
            .arg(&stale)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.index("active"))
            .arg("-inf")
            .arg(&stale)
            .ignore()
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        self.waiters.lock().retain(|_, tx| tx.receiver_count() > 0);
        let unused_since = now_ms - self.options.key_ttl_ms;
        self.senders.lock().retain(|_, sender| sender.used_ms > unused_since);
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
        Ok(())
    }

    async fn release_send(&self, id: &str, seq: u64) -> StoreResult<()> {
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
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(count)
    }

    async fn recent_events(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<(u32, i64)> {
        let times: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("ev", key))
            .arg(format!("({}", now_ms - window_ms))
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
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
        self.probed(result)
    }

    async fn other_nodes(&self, now_ms: i64) -> StoreResult<usize> {
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.index("nodes"))
            .arg(now_ms - NODE_ALIVE_MS)
            .arg("+inf")
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(nodes.iter().filter(|n| **n != self.node).count())
    }

    async fn leave(&self) -> StoreResult<()> {
        let _: () = redis::cmd("ZREM")
            .arg(self.index("nodes"))
            .arg(&self.node)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_session_values_keep_their_insertion_index() {
        assert_eq!(split_stored(r#"3:{"a":"x:y"}"#), Some((3, serde_json::json!({"a": "x:y"}))));
        assert_eq!(split_stored("7:true"), Some((7, Value::Bool(true))));
        assert_eq!(split_stored("no index"), None);
    }
}
