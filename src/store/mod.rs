//! The state behind the engine: connectors, sessions, sequenced queues, idempotent-send
//! records and counters, behind one small interface ([`Store`]) so that a shared store
//! (Redis) can replace the in-memory one for a cluster.
//!
//! Every method is one atomic step for the store: the engine never reads, decides and writes
//! back in separate calls where another node could slip in between. The wake-up of held
//! polls ([`PollRound::wakeup`]) is part of the interface because in a cluster the packet that
//! ends a poll may be queued by another node.

pub mod memory;
pub mod queue;
pub mod redis;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify};

use crate::protocol::Token;

/// How many responses of idempotent sends are kept per connector.
pub const SEND_RESPONSES_KEPT: usize = 64;
/// How long a shared session outlives its last connector (jWebSocket's reconnection window).
pub const SHARED_SESSION_LINGER_MS: i64 = 60_000;

/// Why a connector was closed. Travels through every close path, to logs and to the client
/// (`X-Pollgate-Close-Reason` on the sync that delivers the close command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `action=close`.
    Client,
    /// The client sent the system plugin's `close` token.
    CloseToken,
    /// The session was inactive for `timeout` minutes.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// Evicted to admit a new connector (`onmaxconnections = "close"`).
    Evicted,
    /// Its queue would have exceeded `max_queue_packets` or `max_queue_bytes`.
    QueueOverflow,
    /// An operator closed it (the admin API).
    Admin,
}

impl CloseReason {
    /// The reason as logs, the admin API and `X-Pollgate-Close-Reason` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::CloseToken => "client",
            CloseReason::Timeout => "timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Evicted => "evicted",
            CloseReason::QueueOverflow => "queue overflow",
            CloseReason::Admin => "admin",
        }
    }

    /// The reason [`CloseReason::as_str`] names (a shared store keeps it as text).
    pub fn parse(s: &str) -> Option<CloseReason> {
        Some(match s {
            "client" => CloseReason::Client,
            "timeout" => CloseReason::Timeout,
            "shutdown" => CloseReason::Shutdown,
            "evicted" => CloseReason::Evicted,
            "queue overflow" => CloseReason::QueueOverflow,
            "admin" => CloseReason::Admin,
            _ => return None,
        })
    }
}

/// What the store keeps about a live connector.
#[derive(Debug, Clone)]
pub struct ConnectorInfo {
    /// `md5(connectionId + client_ip)`, the public `sourceId`.
    pub id: String,
    pub session_id: String,
    /// The client address the id was derived from (for operators, never the connectionId).
    pub address: String,
    pub user_agent: String,
    pub opened_ms: i64,
    pub last_active_ms: i64,
}

/// A session as the admin API shows it: live, lingering (shared, no connector yet) or
/// closed within `session_retention`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    /// The user of the last login (`$username`), if any.
    pub user_name: Option<String>,
    /// Has a live connector.
    pub active: bool,
    pub open_ms: i64,
    pub request_ms: i64,
    /// When its last connector left (it may come back if it is shared).
    pub close_ms: Option<i64>,
    /// Address and `User-Agent` of the connector that opened it.
    pub address: String,
    pub client: String,
    pub connectors: Vec<String>,
    /// The session storage (a closed session's is gone: empty).
    pub data: Token,
}

/// One queued packet and its per-connector sequence number (contiguous, from 1).
#[derive(Debug, Clone)]
pub struct QueuedPacket {
    pub seq: u64,
    pub text: Arc<str>,
    /// Set for a packet one push queued for many connectors (a broadcast): see [`SharedQuote`].
    pub quoted: Option<SharedQuote>,
}

/// A packet's text as a JSON string (quoted and escaped), shared by every queue one push
/// reached: the first sync body that carries the packet makes it, the others copy it instead
/// of escaping the text again (a broadcast to N connectors escapes once, not N times).
pub type SharedQuote = Arc<OnceLock<String>>;

/// The body of a sync: the packets' texts as a JSON array of strings. Written into a buffer
/// sized for them, so that it is not grown and copied on the way. Bytes, not a `String`: made
/// of UTF-8 pieces, it would be checked for nothing.
pub fn packets_text(packets: &[QueuedPacket]) -> Vec<u8> {
    // Quotes are the most of what a packet's JSON needs escaped: room for one in four bytes.
    let room = 2 + packets.iter().map(|p| p.text.len() + p.text.len() / 4 + 3).sum::<usize>();
    let mut out = Vec::with_capacity(room);
    out.push(b'[');
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match &packet.quoted {
            Some(quoted) => out.extend_from_slice(quoted.get_or_init(|| quote(&packet.text)).as_bytes()),
            None => crate::protocol::write_json_str(&mut out, &packet.text),
        }
    }
    out.push(b']');
    out
}

fn quote(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + text.len() / 4 + 2);
    crate::protocol::write_json_str(&mut out, text);
    crate::params::utf8_lossy(out)
}

/// Limits of one connector's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_packets: usize,
    pub max_bytes: usize,
}

/// The answer to a `sync`, as the store hands it to the engine.
#[derive(Debug, Default)]
pub struct Drained {
    pub packets: Vec<QueuedPacket>,
    /// `X-Pollgate-Seq`: the last packet's sequence number, or the acknowledged one.
    pub seq: u64,
    /// Set when the connector is closed; the close command is among `packets` or was delivered.
    pub close_reason: Option<CloseReason>,
    /// A newer sync on the same connector took over; this one answers `[]`.
    pub superseded: bool,
    /// No such connector (never opened, closed by the client, or long gone).
    pub unknown: bool,
}

#[derive(Debug, PartialEq)]
pub enum OpenOutcome {
    Opened,
    /// A live connector has this id.
    Exists,
    /// `maxconnections` live connectors.
    Full,
}

#[derive(Debug, PartialEq)]
pub enum PushOutcome {
    Queued,
    /// Queuing would exceed the limits: nothing was queued, the caller closes the connector.
    Overflow,
    /// No live connector of that id.
    Gone,
}

/// What a push to many connectors did.
#[derive(Debug, Default, PartialEq)]
pub struct Fanout {
    /// Connectors the packet was queued for (a shared store may count some that closed
    /// while it pushed).
    pub queued: usize,
    /// Connectors whose queue would have overflowed (nothing was queued for them; the caller
    /// closes them).
    pub overflowed: Vec<String>,
}

/// What a `send` with `seq` may do.
#[derive(Debug, PartialEq)]
pub enum SendClaim {
    /// A new `seq`: run it, then [`Store::complete_send`].
    Fresh,
    /// Already run: here is its stored body.
    Replay(Option<String>),
    /// Being run right now by another request.
    InProgress,
    /// Run so long ago that its response is no longer kept.
    Forgotten,
}

/// A `send` of the system plugin as one store step ([`Store::send_step`]): everything it
/// does is known before the store is asked, but for what the store decides (the requester is
/// live, the session's rights, the idempotency claim, the target is live).
pub struct SendStep<'a> {
    /// The requesting connector.
    pub id: &'a str,
    pub now_ms: i64,
    /// The idempotent send's `seq`, if any.
    pub seq: Option<u64>,
    /// Whether the session's rights entries (the keys `rights_keys`, those that are set)
    /// allow the send.
    pub allowed: &'a (dyn Fn(&Token) -> bool + Sync),
    pub rights_keys: &'a [&'a str],
    /// The packets to queue, for distinct targets. The send fails if the first target is
    /// not live (and then queues nothing); the others are skipped if they are not.
    pub packets: &'a [(&'a str, &'a str)],
    /// The response body, recorded for `seq`.
    pub body: Option<&'a str>,
    pub limits: QueueLimits,
}

/// What [`Store::send_step`] did.
#[derive(Debug, PartialEq)]
pub enum SendStepped {
    /// No live connector has the requester's id: nothing done.
    Unknown,
    /// `seq` was run before: here is its stored body; nothing done.
    Replay(Option<String>),
    /// `seq` is being run right now by another request: nothing done.
    InProgress,
    /// `seq` ran so long ago that its response is no longer kept: nothing done.
    Forgotten,
    /// The rights do not allow the send: nothing queued, `seq` (if any) claimed for the
    /// caller to complete with the failure's body ([`Store::complete_send`]).
    Denied,
    /// The first target is not live: as `Denied`.
    NoTarget,
    /// Queued (but for the returned targets, whose queues would have overflowed: the caller
    /// closes them), the body recorded for `seq`, the request recorded as a touch.
    Done { overflowed: Vec<String> },
    /// The store cannot take this send in one step (on a Redis Cluster, a target lives in
    /// another partition than the requester): nothing done; the caller takes it step by step.
    Split,
}

/// The store could not do what was asked (a shared store that is unreachable).
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// What one round of a sync found ([`Store::poll_round`]).
pub struct PollRound {
    /// The sync's ticket, for its next round.
    pub ticket: u64,
    /// What the drain found.
    pub drained: Result<Drained, u64>,
    /// Fires on the connector's next change after the drain. A round that found something to
    /// return may get [`Wakeup::Gone`] instead: it is not waited on.
    pub wakeup: Wakeup,
}

/// Fires when a packet is queued for a connector, a newer poll takes over, or it closes.
pub enum Wakeup {
    /// A version channel (the Redis store's local registry).
    Watch(watch::Receiver<u64>),
    /// A `Notify` the memory store signals with `notify_waiters`: registered as soon as it
    /// is made, polled or not (tokio guarantees it), and 64 bytes per connector instead of
    /// the ~450 of a `watch` channel (every idle client has one).
    Notify(Pin<Box<OwnedNotified>>),
    /// The connector does not exist: fires at once, and the caller's drain reports it unknown.
    Gone,
}

impl Wakeup {
    /// A wake-up on `notify`, registered from now (see [`Wakeup::Notify`]).
    pub fn notified(notify: &Arc<Notify>) -> Wakeup {
        Wakeup::Notify(Box::pin(notify.clone().notified_owned()))
    }

    /// Waits for the next change after this `Wakeup` was made.
    pub async fn changed(&mut self) {
        match self {
            // An error means the connector is gone: wake; the caller's next drain sees it.
            Wakeup::Watch(receiver) => {
                let _ = receiver.changed().await;
            }
            Wakeup::Notify(notified) => notified.as_mut().await,
            Wakeup::Gone => {}
        }
    }
}

/// The interface every store implements. See the module docs for the atomicity rule.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- connectors
    /// Creates a connector (and its session, if new) with `welcome` as packet 1, unless a
    /// live one has the id or `max_connectors` are live. A closed connector of the same id
    /// is replaced.
    async fn open(
        &self,
        info: ConnectorInfo,
        shared_session: bool,
        max_connectors: usize,
        welcome: Arc<str>,
    ) -> StoreResult<OpenOutcome>;
    /// A live connector.
    async fn connector(&self, id: &str) -> StoreResult<Option<ConnectorInfo>>;
    /// Every live connector.
    async fn connectors(&self) -> StoreResult<Vec<ConnectorInfo>>;
    async fn connector_count(&self) -> StoreResult<usize>;
    /// Sessions with at least one live connector.
    async fn session_count(&self) -> StoreResult<usize>;
    /// The live connector whose last request is the oldest.
    async fn least_recent(&self) -> StoreResult<Option<String>>;
    /// Records a request of a live connector (its last activity and its session's deadline)
    /// and returns the connector's session id; `None` if no live connector has the id. A
    /// shared store may skip recording requests that come within a small fraction of the
    /// timeout of the last one it recorded.
    async fn touch(&self, id: &str, now_ms: i64) -> StoreResult<Option<String>>;
    /// [`Store::touch`], also reading the entries of `keys` in the connector's session where
    /// that saves the store a step (a shared store: one round trip, not two); `None` in their
    /// place where it does not (the caller then reads them with [`Store::session_read`]).
    async fn touch_reading(
        &self,
        id: &str,
        now_ms: i64,
        _keys: &[&str],
    ) -> StoreResult<Option<(String, Option<Token>)>> {
        Ok(self.touch(id, now_ms).await?.map(|session_id| (session_id, None)))
    }
    /// Closes a live connector. With `notify`, its queue ends with the close command and it is
    /// kept until that is delivered (or `retention_ms` passes); without, it goes at once.
    /// Returns the connector to exactly one caller, so close events are sent once. With
    /// `notify`, `farewell` is queued just before the close command, in the same step, so a
    /// held poll gets both in one answer (`systemStopping` at shutdown).
    async fn close(
        &self,
        id: &str,
        reason: CloseReason,
        notify: bool,
        farewell: Option<&str>,
    ) -> StoreResult<Option<ConnectorInfo>>;

    // ---- queues
    /// Queues a packet. With `once`, a packet already queued for this connector under the
    /// same key is not queued again (a send re-run after a node died in the middle of it);
    /// a store of one node, which dies with its sends, may ignore it.
    async fn push(&self, id: &str, text: Arc<str>, limits: QueueLimits, once: Option<&str>)
        -> StoreResult<PushOutcome>;
    /// Pushes one packet to many connectors; returns the ids that overflowed.
    async fn push_many(
        &self,
        ids: &[String],
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Vec<String>>;
    /// Pushes one packet to every live connector but `except` (a broadcast): one step, with
    /// no list of ids built first. Returns the ids that overflowed.
    async fn push_all(
        &self,
        except: Option<&str>,
        text: Arc<str>,
        limits: QueueLimits,
        once: Option<&str>,
    ) -> StoreResult<Fanout>;
    /// One round of a sync, in one step. With no `ticket` yet, the sync begins: it is
    /// recorded as a request of the connector, as [`Store::touch`] does (if the connector is
    /// live), takes a new ticket and makes any older held sync of the connector return. Then
    /// the drain: without `ack`, returned packets are removed; with `ack`, packets up to it
    /// are removed and all later ones returned (`Err(last)` when `ack` is beyond the last
    /// sequence number issued); a sync that `waited` records its request again, at `now_ms`.
    /// A round that finds nothing to return gets a wake-up for the connector's next change
    /// after the drain (a round that found something may get [`Wakeup::Gone`]).
    async fn poll_round(
        &self,
        id: &str,
        ack: Option<u64>,
        ticket: Option<u64>,
        now_ms: i64,
        waited: bool,
    ) -> StoreResult<PollRound>;
    /// The first rounds of a poll that carries several connectors at once (a shared poll):
    /// [`Store::poll_round`] with no ticket for each `(id, ack)`, in the order given, except
    /// that the older polls they take over are woken only once every one is taken. So an
    /// older poll woken by the takeover finds all the connectors it shares with the new one
    /// taken, not some: a newest poll takes its connectors over together.
    async fn begin_polls(&self, carried: &[(&str, Option<u64>)], now_ms: i64) -> StoreResult<Vec<PollRound>>;
    /// Fires every wake-up made on this node (shutdown: held polls answer at once).
    fn wake_all(&self);

    /// Whether [`Store::send_step`] takes a send in one step (a shared store: one round
    /// trip instead of a touch, a claim, a push and a completion). A store that does not
    /// has the engine take the steps one by one.
    fn sends_in_one_step(&self) -> bool {
        false
    }
    /// A `send` in one atomic step: records the request as [`Store::touch`] does, claims
    /// `seq` as [`Store::claim_send`] does, checks the rights, queues the packets as
    /// [`Store::push`] does and records the body as [`Store::complete_send`] does, each
    /// only as far as the one before allows (see [`SendStepped`]). Only called when
    /// [`Store::sends_in_one_step`] says so.
    async fn send_step(&self, _step: &SendStep<'_>) -> StoreResult<SendStepped> {
        Err(StoreError("sends are not taken in one step by this store".into()))
    }

    // ---- sessions
    /// The whole session storage (empty for an unknown session).
    async fn session_storage(&self, session_id: &str) -> StoreResult<Token>;
    async fn session_get(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>>;
    /// Lends `read` a session's storage holding at least the entries of `keys` that are set
    /// (a shared store reads only those; empty for an unknown session), without copying
    /// what the store can lend. For checks made on every request: the rights of a `send`.
    async fn session_read(
        &self,
        session_id: &str,
        keys: &[&str],
        read: &mut (dyn for<'t> FnMut(&'t Token) + Send),
    ) -> StoreResult<()>;
    async fn session_put(&self, session_id: &str, key: &str, value: Value) -> StoreResult<()>;
    async fn session_remove(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>>;
    async fn session_clear(&self, session_id: &str) -> StoreResult<()>;
    /// Sets `entries` unless the session is already authenticated; false if it was.
    async fn session_login(&self, session_id: &str, entries: Token) -> StoreResult<bool>;
    /// The live connectors of a session.
    async fn session_connectors(&self, session_id: &str) -> StoreResult<Vec<String>>;

    // ---- expiry
    /// Sessions with live connectors whose last request is before `idle_before_ms`.
    async fn expired_sessions(&self, idle_before_ms: i64) -> StoreResult<Vec<String>>;
    /// Forgets closed connectors older than `retention_ms`, sessions left empty, and the
    /// records of sessions closed longer than `record_retention_ms` ago.
    async fn sweep(&self, now_ms: i64, retention_ms: i64, record_retention_ms: i64) -> StoreResult<()>;

    // ---- administration
    /// Every session: live, lingering, or closed within the record retention.
    async fn session_records(&self) -> StoreResult<Vec<SessionRecord>>;
    /// Forgets a session and its record; false if there was none. Close its connectors first.
    async fn forget_session(&self, session_id: &str) -> StoreResult<bool>;
    /// How many packets each connector has queued, in the order of `ids` (0 if unknown).
    async fn queue_depths(&self, ids: &[String]) -> StoreResult<Vec<usize>>;

    // ---- idempotent sends
    /// Claims `seq` for running. A claim left in progress by a node that died is taken over
    /// after a while (the re-run's packets carry the same `once` keys, so none is doubled).
    async fn claim_send(&self, id: &str, seq: u64) -> StoreResult<SendClaim>;
    async fn complete_send(&self, id: &str, seq: u64, body: Option<String>) -> StoreResult<()>;
    /// Gives back the claim of a send that failed, so its retry runs at once rather than
    /// after the lease. What it queued keeps its `once` keys, so the retry doubles nothing.
    async fn release_send(&self, id: &str, seq: u64) -> StoreResult<()>;

    // ---- counters
    /// Records one event under `key` and returns how many fell within the last `window_ms`.
    async fn count_event(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<u32>;
    /// How many events under `key` fell within the last `window_ms`, and when the oldest of
    /// them leaves the window.
    async fn recent_events(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<(u32, i64)>;

    /// Whether the store can be reached (`/readyz`).
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    // ---- nodes of a cluster (a store of one node has nothing to do)
    /// Announces this node as alive.
    async fn heartbeat(&self, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }
    /// How many other nodes announced themselves recently.
    async fn other_nodes(&self, _now_ms: i64) -> StoreResult<usize> {
        Ok(0)
    }
    /// This node leaves the cluster (a clean shutdown); its connectors stay for the others.
    async fn leave(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body is what serde_json writes for the texts, whether a packet's quote is shared
    /// (made by this body or by an earlier one) or not.
    #[test]
    fn packets_text_is_the_json_array_of_the_texts() {
        let quoted = r#"{"ns":"x","data":"a \"b\" \\ c\n","é":"\u0001"}"#;
        let cases: [&[&str]; 4] = [&[], &["http.command.close"], &[quoted, "", "plain"], &["\u{2028}\t<>"]];
        for texts in cases {
            let expected = serde_json::to_string(texts).unwrap();
            let packets = |shared: bool| -> Vec<QueuedPacket> {
                let packet = |(i, t): (usize, &&str)| QueuedPacket {
                    seq: i as u64 + 1,
                    text: (*t).into(),
                    quoted: shared.then(SharedQuote::default),
                };
                texts.iter().enumerate().map(packet).collect()
            };
            assert_eq!(packets_text(&packets(false)), expected.as_bytes());
            let shared = packets(true);
            assert_eq!(packets_text(&shared), expected.as_bytes(), "making the quotes");
            assert_eq!(packets_text(&shared), expected.as_bytes(), "copying them");
        }
    }
}
