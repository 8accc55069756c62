//! The in-memory store: one node, everything in this process, lost on restart.
//!
//! All state sits behind one mutex. Every method takes it once, does its whole step and
//! releases it before returning, so each method is atomic and no lock is ever held across an
//! `.await`. Wake-ups are a `Notify` per connector, signalled while the lock is held so a poll
//! that subscribed before draining cannot miss a packet.

use std::collections::VecDeque;

// Keyed per process like std's SipHash, several times faster on the short ids every
// request looks up; keys come from clients, so the seed must not be predictable.
use foldhash::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

use super::queue::Queue;
use super::{
    CloseReason, ConnectorInfo, Drained, Fanout, OpenOutcome, PollRound, PushOutcome, QueueLimits, SendClaim,
    SessionRecord, SharedQuote, Store, StoreResult, Wakeup, SEND_RESPONSES_KEPT, SHARED_SESSION_LINGER_MS,
};
use crate::protocol::{Token, CLOSE_COMMAND};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Boxed, as the sessions: a map keeps room for more entries than it holds, and an
    /// empty slot then costs a pointer, not a whole entry.
    connectors: HashMap<String, Box<ConnectorEntry>>,
    sessions: HashMap<String, Box<SessionEntry>>,
    /// Records of closed sessions, kept for the record retention.
    closed_sessions: HashMap<String, SessionRecord>,
    /// Event times per counter key (failed logins), oldest first.
    counters: HashMap<String, VecDeque<i64>>,
    /// Connectors that are not closed (the admission count).
    live: usize,
}

struct ConnectorEntry {
    info: ConnectorInfo,
    queue: Queue,
    /// Set once closed: the reason and when. A closed entry only serves the pending close.
    closed: Option<(CloseReason, i64)>,
    /// Ticket of the newest sync; older held syncs see a different one and return.
    poll_ticket: u64,
    /// Bumped on every push, poll takeover and close.
    wake: Arc<Notify>,
    /// Made by the first send with a `seq` (most connectors never send one).
    sends: Option<Box<SendLog>>,
}

#[derive(Default)]
struct SendLog {
    last_seq: u64,
    in_progress: Vec<u64>,
    /// Sends that failed and gave their claim back: the next claim runs them again.
    released: Vec<u64>,
    /// The responses of the highest completed seqs, at most `SEND_RESPONSES_KEPT`.
    responses: VecDeque<(u64, Option<String>)>,
    /// The highest seq whose response was dropped from `responses`. A seq at or below
    /// `last_seq` that is above it and in none of the lists was never claimed (it arrived
    /// after a higher one, from a client that sends in parallel): it runs.
    forgotten_up_to: u64,
}

struct SessionEntry {
    storage: Token,
    /// Live connectors of the session.
    connectors: Vec<String>,
    last_request_ms: i64,
    shared: bool,
    /// When the last connector left (for the linger of shared sessions).
    empty_since: Option<i64>,
    opened_ms: i64,
    /// Address and user agent of the connector that opened the session.
    address: String,
    client: String,
}

impl SessionEntry {
    fn record(&self, id: &str) -> SessionRecord {
        let user_name = self.storage.get("$username").and_then(|v| v.as_str()).map(str::to_owned);
        SessionRecord {
            id: id.to_owned(),
            user_name,
            active: !self.connectors.is_empty(),
            open_ms: self.opened_ms,
            request_ms: self.last_request_ms,
            close_ms: self.empty_since,
            address: self.address.clone(),
            client: self.client.clone(),
            connectors: self.connectors.clone(),
            data: self.storage.clone(),
        }
    }
}

impl ConnectorEntry {
    fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Records a request of this connector, its last activity and its session's, if it is
    /// live; false if it is closed (a closed connector's sync is no activity, but it still
    /// collects the close command).
    fn record_request(&mut self, sessions: &mut HashMap<String, Box<SessionEntry>>, now_ms: i64) -> bool {
        if self.closed.is_some() {
            return false;
        }
        self.info.last_active_ms = now_ms;
        if let Some(session) = sessions.get_mut(&self.info.session_id) {
            session.last_request_ms = session.last_request_ms.max(now_ms);
        }
        true
    }

    /// Queues a packet and wakes the held poll; false (nothing queued) if it would overflow.
    fn enqueue(&mut self, text: Arc<str>, quoted: Option<SharedQuote>, limits: QueueLimits) -> bool {
        let queued = self.queue.push(text, quoted, limits).is_some();
        if queued {
            self.wake();
        }
        queued
    }
}

/// An entry removed (reaped, forgotten, replaced) wakes its held polls: their next drain
/// finds it gone.
impl Drop for ConnectorEntry {
    fn drop(&mut self) {
        self.wake();
    }
}

impl Inner {
    /// Begins a sync ([`Store::poll_round`]): returns its ticket, 0 for an unknown connector.
    fn begin_poll(&mut self, id: &str, now_ms: i64) -> u64 {
        let Inner { connectors, sessions, .. } = self;
        let Some(entry) = connectors.get_mut(id) else { return 0 };
        entry.record_request(sessions, now_ms);
        entry.poll_ticket += 1;
        entry.wake();
        entry.poll_ticket
    }

    /// The drain of [`Store::poll_round`], recording a request at `touch_at` first, with a
    /// wake-up for the connector's next change when the drain found nothing to return
    /// ([`Wakeup::Gone`] otherwise).
    fn drain(
        &mut self,
        id: &str,
        ack: Option<u64>,
        ticket: u64,
        touch_at: Option<i64>,
    ) -> (Result<Drained, u64>, Wakeup) {
        let Inner { connectors, sessions, .. } = self;
        let Some(entry) = connectors.get_mut(id) else {
            return (Ok(Drained { unknown: true, seq: ack.unwrap_or(0), ..Drained::default() }), Wakeup::Gone);
        };
        if let Some(now_ms) = touch_at {
            entry.record_request(sessions, now_ms);
        }
        let close_reason = entry.closed.map(|(r, _)| r);
        if entry.poll_ticket != ticket {
            let superseded = Drained { superseded: true, seq: entry.queue.acked(), close_reason, ..Drained::default() };
            return (Ok(superseded), Wakeup::Gone);
        }
        let (packets, close_delivered) = match ack {
            Some(n) => {
                if let Err(last) = entry.queue.ack(n) {
                    return (Err(last), Wakeup::Gone);
                }
                // Closed and everything (the close command included) acknowledged.
                (entry.queue.pending(), close_reason.is_some() && entry.queue.is_empty())
            }
            None => {
                let packets = entry.queue.take_all();
                let delivered = close_reason.is_some();
                (packets, delivered)
            }
        };
        let seq = packets.last().map_or(entry.queue.acked(), |p| p.seq);
        let wakeup = match packets.is_empty() && close_reason.is_none() {
            true => Wakeup::notified(&entry.wake),
            false => Wakeup::Gone,
        };
        if close_delivered {
            connectors.remove(id);
        }
        (Ok(Drained { packets, seq, close_reason, superseded: false, unknown: false }), wakeup)
    }

    /// Marks a connector closed (or removes it) and unlinks it from its session.
    fn close(
        &mut self,
        id: &str,
        reason: CloseReason,
        notify: bool,
        farewell: Option<&str>,
        now: i64,
    ) -> Option<ConnectorInfo> {
        let entry = self.connectors.get_mut(id)?;
        if entry.closed.is_some() {
            if !notify {
                // The client closes a connector whose close is pending: forget it now.
                self.connectors.remove(id);
            }
            return None;
        }
        let info = entry.info.clone();
        self.live -= 1;
        if notify {
            if let Some(text) = farewell {
                entry.queue.push_unbounded(text.into());
            }
            entry.queue.push_unbounded(CLOSE_COMMAND.into());
            entry.closed = Some((reason, now));
            entry.wake();
        } else if let Some(entry) = self.connectors.remove(id) {
            entry.wake();
        }
        self.leave_session(&info.session_id, id, now);
        Some(info)
    }

    fn leave_session(&mut self, session_id: &str, connector_id: &str, now: i64) {
        let Some(session) = self.sessions.get_mut(session_id) else { return };
        session.connectors.retain(|c| c != connector_id);
        if session.connectors.is_empty() {
            session.empty_since = Some(now);
            if !session.shared {
                self.close_session(session_id);
            }
        }
    }

    /// Forgets a session, keeping its record (without its storage) for a while.
    fn close_session(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.remove(session_id) {
            let record = SessionRecord { connectors: Vec::new(), data: Token::new(), ..session.record(session_id) };
            self.closed_sessions.insert(session_id.to_owned(), record);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn open(
        &self,
        info: ConnectorInfo,
        shared_session: bool,
        max_connectors: usize,
        welcome: Arc<str>,
    ) -> StoreResult<OpenOutcome> {
        let mut inner = self.inner.lock();
        let replaced_wake = match inner.connectors.get(&info.id) {
            Some(existing) if existing.closed.is_none() => return Ok(OpenOutcome::Exists),
            Some(existing) => Some(existing.wake.clone()),
            None => None,
        };
        if inner.live >= max_connectors {
            return Ok(OpenOutcome::Full);
        }
        let now = info.opened_ms;
        inner.closed_sessions.remove(&info.session_id);
        let session = inner.sessions.entry(info.session_id.clone()).or_insert_with(|| {
            Box::new(SessionEntry {
                storage: Token::new(),
                // Most sessions have one connector; a plain `Vec` would make room for four.
                connectors: Vec::with_capacity(1),
                last_request_ms: now,
                shared: shared_session,
                empty_since: None,
                opened_ms: now,
                address: info.address.clone(),
                client: info.user_agent.clone(),
            })
        });
        session.connectors.push(info.id.clone());
        session.last_request_ms = now;
        session.empty_since = None;
        let mut queue = Queue::default();
        queue.push_unbounded(welcome);
        // A held poll on the replaced (closed) entry keeps its channel and is woken.
        let wake = replaced_wake.unwrap_or_default();
        let entry = ConnectorEntry { info: info.clone(), queue, closed: None, poll_ticket: 0, wake, sends: None };
        entry.wake();
        inner.connectors.insert(info.id, Box::new(entry));
        inner.live += 1;
        Ok(OpenOutcome::Opened)
    }

    async fn connector(&self, id: &str) -> StoreResult<Option<ConnectorInfo>> {
        let inner = self.inner.lock();
        Ok(inner.connectors.get(id).filter(|c| c.closed.is_none()).map(|c| c.info.clone()))
    }

    async fn connectors(&self) -> StoreResult<Vec<ConnectorInfo>> {
        let inner = self.inner.lock();
        Ok(inner.connectors.values().filter(|c| c.closed.is_none()).map(|c| c.info.clone()).collect())
    }

    async fn connector_count(&self) -> StoreResult<usize> {
        Ok(self.inner.lock().live)
    }

    async fn session_count(&self) -> StoreResult<usize> {
        Ok(self.inner.lock().sessions.values().filter(|s| !s.connectors.is_empty()).count())
    }

    async fn least_recent(&self) -> StoreResult<Option<String>> {
        let inner = self.inner.lock();
        Ok(inner
            .connectors
            .values()
            .filter(|c| c.closed.is_none())
            .min_by_key(|c| c.info.last_active_ms)
            .map(|c| c.info.id.clone()))
    }

    async fn touch(&self, id: &str, now_ms: i64) -> StoreResult<Option<String>> {
        let mut inner = self.inner.lock();
        let Inner { connectors, sessions, .. } = &mut *inner;
        let Some(entry) = connectors.get_mut(id) else { return Ok(None) };
        Ok(entry.record_request(sessions, now_ms).then(|| entry.info.session_id.clone()))
    }

    async fn close(
        &self,
        id: &str,
        reason: CloseReason,
        notify: bool,
        farewell: Option<&str>,
    ) -> StoreResult<Option<ConnectorInfo>> {
        Ok(self.inner.lock().close(id, reason, notify, farewell, crate::protocol::now_ms()))
    }

    // `once` is not needed here: a send is never re-run by another process.
    async fn push(
        &self,
        id: &str,
        text: Arc<str>,
        limits: QueueLimits,
        _once: Option<&str>,
    ) -> StoreResult<PushOutcome> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.connectors.get_mut(id).filter(|c| c.closed.is_none()) else {
            return Ok(PushOutcome::Gone);
        };
        Ok(if entry.enqueue(text, None, limits) { PushOutcome::Queued } else { PushOutcome::Overflow })
    }

    async fn push_many(
        &self,
        ids: &[String],
        text: Arc<str>,
        limits: QueueLimits,
        _once: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let quoted = (ids.len() > 1).then(SharedQuote::default);
        let mut inner = self.inner.lock();
        let mut overflowed = Vec::new();
        for id in ids {
            let Some(entry) = inner.connectors.get_mut(id).filter(|c| c.closed.is_none()) else { continue };
            if !entry.enqueue(text.clone(), quoted.clone(), limits) {
                overflowed.push(id.clone());
            }
        }
        Ok(overflowed)
    }

    async fn push_all(
        &self,
        except: Option<&str>,
        text: Arc<str>,
        limits: QueueLimits,
        _once: Option<&str>,
    ) -> StoreResult<Fanout> {
        let quoted = SharedQuote::default();
        let mut inner = self.inner.lock();
        let mut fanout = Fanout::default();
        for (id, entry) in inner.connectors.iter_mut() {
            if entry.closed.is_some() || Some(id.as_str()) == except {
                continue;
            }
            if entry.enqueue(text.clone(), Some(quoted.clone()), limits) {
                fanout.queued += 1;
            } else {
                fanout.overflowed.push(id.clone());
            }
        }
        Ok(fanout)
    }

    /// All under one lock: the wake-up is made before any push that follows the drain (a
    /// push takes the lock), and only for a round that found nothing to return.
    async fn poll_round(
        &self,
        id: &str,
        ack: Option<u64>,
        ticket: Option<u64>,
        now_ms: i64,
        waited: bool,
    ) -> StoreResult<PollRound> {
        let mut inner = self.inner.lock();
        let ticket = ticket.unwrap_or_else(|| inner.begin_poll(id, now_ms));
        let (drained, wakeup) = inner.drain(id, ack, ticket, waited.then_some(now_ms));
        Ok(PollRound { ticket, drained, wakeup })
    }

    /// Under one lock: an older poll woken by a beginning drains only after the lock is
    /// released, when every connector is taken.
    async fn begin_polls(&self, carried: &[(&str, Option<u64>)], now_ms: i64) -> StoreResult<Vec<PollRound>> {
        let mut inner = self.inner.lock();
        let tickets: Vec<u64> = carried.iter().map(|(id, _)| inner.begin_poll(id, now_ms)).collect();
        Ok(carried
            .iter()
            .zip(tickets)
            .map(|((id, ack), ticket)| {
                let (drained, wakeup) = inner.drain(id, *ack, ticket, None);
                PollRound { ticket, drained, wakeup }
            })
            .collect())
    }

    fn wake_all(&self) {
        for entry in self.inner.lock().connectors.values() {
            entry.wake();
        }
    }

    async fn session_storage(&self, session_id: &str) -> StoreResult<Token> {
        Ok(self.inner.lock().sessions.get(session_id).map(|s| s.storage.clone()).unwrap_or_default())
    }

    async fn session_get(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>> {
        Ok(self.inner.lock().sessions.get(session_id).and_then(|s| s.storage.get(key).cloned()))
    }

    async fn session_read(
        &self,
        session_id: &str,
        _keys: &[&str],
        read: &mut (dyn for<'t> FnMut(&'t Token) + Send),
    ) -> StoreResult<()> {
        match self.inner.lock().sessions.get(session_id) {
            Some(s) => read(&s.storage),
            None => read(&Token::new()),
        }
        Ok(())
    }

    async fn session_put(&self, session_id: &str, key: &str, value: Value) -> StoreResult<()> {
        if let Some(s) = self.inner.lock().sessions.get_mut(session_id) {
            s.storage.insert(key.to_owned(), value);
        }
        Ok(())
    }

    async fn session_remove(&self, session_id: &str, key: &str) -> StoreResult<Option<Value>> {
        Ok(self.inner.lock().sessions.get_mut(session_id).and_then(|s| s.storage.shift_remove(key)))
    }

    async fn session_clear(&self, session_id: &str) -> StoreResult<()> {
        if let Some(s) = self.inner.lock().sessions.get_mut(session_id) {
            s.storage.clear();
        }
        Ok(())
    }

    async fn session_login(&self, session_id: &str, entries: Token) -> StoreResult<bool> {
        let mut inner = self.inner.lock();
        let Some(s) = inner.sessions.get_mut(session_id) else { return Ok(false) };
        if s.storage.get("$is_authenticated") == Some(&Value::Bool(true)) {
            return Ok(false);
        }
        for (k, v) in entries {
            s.storage.insert(k, v);
        }
        Ok(true)
    }

    async fn session_connectors(&self, session_id: &str) -> StoreResult<Vec<String>> {
        Ok(self.inner.lock().sessions.get(session_id).map(|s| s.connectors.clone()).unwrap_or_default())
    }

    async fn expired_sessions(&self, idle_before_ms: i64) -> StoreResult<Vec<String>> {
        let inner = self.inner.lock();
        Ok(inner
            .sessions
            .iter()
            .filter(|(_, s)| !s.connectors.is_empty() && s.last_request_ms < idle_before_ms)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn sweep(&self, now_ms: i64, retention_ms: i64, record_retention_ms: i64) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        inner.connectors.retain(|_, c| match c.closed {
            Some((_, at)) => now_ms - at < retention_ms,
            None => true,
        });
        let lingered: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.empty_since.is_some_and(|at| now_ms - at >= SHARED_SESSION_LINGER_MS))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lingered {
            inner.close_session(&id);
        }
        inner.closed_sessions.retain(|_, r| r.close_ms.is_some_and(|at| now_ms - at < record_retention_ms));
        inner.counters.retain(|_, times| times.back().is_some_and(|t| now_ms - t < 3_600_000));
        // Give back what a burst of connections left behind (maps never shrink by themselves).
        if inner.connectors.capacity() > 64 && inner.connectors.len() < inner.connectors.capacity() / 4 {
            inner.connectors.shrink_to_fit();
        }
        if inner.sessions.capacity() > 64 && inner.sessions.len() < inner.sessions.capacity() / 4 {
            inner.sessions.shrink_to_fit();
        }
        if inner.closed_sessions.capacity() > 64 && inner.closed_sessions.len() < inner.closed_sessions.capacity() / 4 {
            inner.closed_sessions.shrink_to_fit();
        }
        Ok(())
    }

    async fn session_records(&self) -> StoreResult<Vec<SessionRecord>> {
        let inner = self.inner.lock();
        let live = inner.sessions.iter().map(|(id, s)| s.record(id));
        Ok(live.chain(inner.closed_sessions.values().cloned()).collect())
    }

    async fn forget_session(&self, session_id: &str) -> StoreResult<bool> {
        let mut inner = self.inner.lock();
        let live = inner.sessions.remove(session_id).is_some();
        Ok(inner.closed_sessions.remove(session_id).is_some() || live)
    }

    async fn queue_depths(&self, ids: &[String]) -> StoreResult<Vec<usize>> {
        let inner = self.inner.lock();
        Ok(ids.iter().map(|id| inner.connectors.get(id).map_or(0, |c| c.queue.len())).collect())
    }

    async fn claim_send(&self, id: &str, seq: u64) -> StoreResult<SendClaim> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.connectors.get_mut(id) else { return Ok(SendClaim::Fresh) };
        let log = entry.sends.get_or_insert_default();
        if seq > log.last_seq {
            log.last_seq = seq;
            log.in_progress.push(seq);
            return Ok(SendClaim::Fresh);
        }
        if log.in_progress.contains(&seq) {
            return Ok(SendClaim::InProgress);
        }
        if let Some(i) = log.released.iter().position(|s| *s == seq) {
            log.released.swap_remove(i);
            log.in_progress.push(seq);
            return Ok(SendClaim::Fresh);
        }
        Ok(match log.responses.iter().find(|(s, _)| *s == seq) {
            Some((_, body)) => SendClaim::Replay(body.clone()),
            None if seq > log.forgotten_up_to => {
                log.in_progress.push(seq);
                SendClaim::Fresh
            }
            None => SendClaim::Forgotten,
        })
    }

    async fn complete_send(&self, id: &str, seq: u64, body: Option<String>) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.connectors.get_mut(id) else { return Ok(()) };
        let log = entry.sends.get_or_insert_default();
        log.in_progress.retain(|s| *s != seq);
        log.responses.push_back((seq, body));
        // Drop the lowest seqs (not the oldest completions), as the Redis store does, so
        // that everything at or below `forgotten_up_to` that was claimed is forgotten.
        while log.responses.len() > SEND_RESPONSES_KEPT {
            let lowest = (0..log.responses.len()).min_by_key(|i| log.responses[*i].0).unwrap_or(0);
            if let Some((dropped, _)) = log.responses.remove(lowest) {
                log.forgotten_up_to = log.forgotten_up_to.max(dropped);
            }
        }
        Ok(())
    }

    async fn release_send(&self, id: &str, seq: u64) -> StoreResult<()> {
        if let Some(entry) = self.inner.lock().connectors.get_mut(id) {
            let log = entry.sends.get_or_insert_default();
            if let Some(i) = log.in_progress.iter().position(|s| *s == seq) {
                log.in_progress.swap_remove(i);
                log.released.push(seq);
            }
        }
        Ok(())
    }

    async fn count_event(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<u32> {
        let mut inner = self.inner.lock();
        let times = inner.counters.entry(key.to_owned()).or_default();
        times.push_back(now_ms);
        while times.front().is_some_and(|t| now_ms - t >= window_ms) {
            times.pop_front();
        }
        Ok(times.len() as u32)
    }

    async fn recent_events(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<(u32, i64)> {
        let inner = self.inner.lock();
        let Some(times) = inner.counters.get(key) else { return Ok((0, now_ms)) };
        let recent: Vec<i64> = times.iter().copied().filter(|t| now_ms - t < window_ms).collect();
        Ok((recent.len() as u32, recent.first().map_or(now_ms, |t| t + window_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_c1() -> MemoryStore {
        let store = MemoryStore::default();
        open_in_s1(&store, "c1").await;
        store
    }

    /// Opens connector `id` in session `s1`.
    async fn open_in_s1(store: &MemoryStore, id: &str) {
        let info = ConnectorInfo {
            id: id.into(),
            session_id: "s1".into(),
            address: "127.0.0.1".into(),
            user_agent: String::new(),
            opened_ms: 0,
            last_active_ms: 0,
        };
        store.open(info, false, 10, "welcome".into()).await.unwrap();
    }

    /// Whether `wakeup` has fired (polled once, without waiting).
    async fn fired(wakeup: &mut Wakeup) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, wakeup.changed()).await.is_ok()
    }

    /// A wake-up counts from when it is made, not from its first poll: what happens after
    /// the round that made it (a push, a shutdown, the connector's removal) fires it.
    #[tokio::test]
    async fn wake_ups_fire_for_what_happens_after_they_are_made() {
        let store = store_with_c1().await;
        let ticket = store.poll_round("c1", None, None, 0, false).await.unwrap().ticket; // the welcome
        let held = || store.poll_round("c1", None, Some(ticket), 0, true);
        let mut quiet = held().await.unwrap().wakeup;
        assert!(!fired(&mut quiet).await);
        let mut pushed = held().await.unwrap().wakeup;
        store.push("c1", "p".into(), QueueLimits { max_packets: 10, max_bytes: 100 }, None).await.unwrap();
        assert!(fired(&mut pushed).await);
        assert_eq!(held().await.unwrap().drained.unwrap().packets.len(), 1);
        let mut all = held().await.unwrap().wakeup;
        store.wake_all();
        assert!(fired(&mut all).await);
        // A connector that goes away wakes its polls; an unknown one fires at once.
        let mut removed = held().await.unwrap().wakeup;
        store.inner.lock().connectors.remove("c1");
        assert!(fired(&mut removed).await);
        assert!(fired(&mut held().await.unwrap().wakeup).await);
    }

    #[tokio::test]
    async fn a_session_read_lends_the_storage_and_an_unknown_session_an_empty_one() {
        let store = store_with_c1().await;
        store.session_put("s1", "$authorities", "a b ".into()).await.unwrap();
        let mut seen = Vec::new();
        let mut read = |s: &Token| seen.push(s.get("$authorities").cloned());
        store.session_read("s1", &["$authorities"], &mut read).await.unwrap();
        store.session_read("unknown", &["$authorities"], &mut read).await.unwrap();
        assert_eq!(seen, [Some(Value::from("a b ")), None]);
    }

    #[tokio::test]
    async fn a_released_send_is_claimed_afresh_once_and_then_answered_from_its_record() {
        let store = store_with_c1().await;
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::Fresh);
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::InProgress);
        store.release_send("c1", 1).await.unwrap();
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::Fresh);
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::InProgress);
        store.complete_send("c1", 1, Some("done".into())).await.unwrap();
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::Replay(Some("done".into())));
        // Releasing a completed send changes nothing.
        store.release_send("c1", 1).await.unwrap();
        assert_eq!(store.claim_send("c1", 1).await.unwrap(), SendClaim::Replay(Some("done".into())));
    }

    #[tokio::test]
    async fn a_send_that_arrives_after_a_higher_seq_runs_unless_it_may_have_been_forgotten() {
        let store = store_with_c1().await;
        let n = SEND_RESPONSES_KEPT as u64;
        // 10 arrives first; 1..=9 arrive later and were never claimed: each runs once.
        assert_eq!(store.claim_send("c1", 10).await.unwrap(), SendClaim::Fresh);
        store.complete_send("c1", 10, Some("10".into())).await.unwrap();
        for seq in 1..10 {
            assert_eq!(store.claim_send("c1", seq).await.unwrap(), SendClaim::Fresh, "{seq}");
            assert_eq!(store.claim_send("c1", seq).await.unwrap(), SendClaim::InProgress);
            store.complete_send("c1", seq, Some(seq.to_string())).await.unwrap();
        }
        // Fill the record past its size: the lowest seqs are dropped, whatever their order.
        for seq in 11..=n + 10 {
            assert_eq!(store.claim_send("c1", seq).await.unwrap(), SendClaim::Fresh);
            store.complete_send("c1", seq, Some(seq.to_string())).await.unwrap();
        }
        for seq in 1..=10 {
            assert_eq!(store.claim_send("c1", seq).await.unwrap(), SendClaim::Forgotten, "{seq}");
        }
        let kept = n + 10;
        assert_eq!(store.claim_send("c1", kept).await.unwrap(), SendClaim::Replay(Some(kept.to_string())));
    }

    /// A broadcast escapes its packet once: every queue it reached shares the quote, which
    /// the first sync body makes and the others copy; a packet for one queue has none.
    #[tokio::test]
    async fn a_packet_pushed_to_many_queues_shares_one_quote() {
        let store = store_with_c1().await;
        open_in_s1(&store, "c2").await;
        open_in_s1(&store, "c3").await;
        let limits = QueueLimits { max_packets: 10, max_bytes: 1000 };
        let text = r#"{"type":"broadcast","data":"a \"b\""}"#;
        let drain = |id: &'static str| {
            let store = &store;
            async move { store.poll_round(id, None, None, 0, false).await.unwrap().drained.unwrap().packets }
        };
        for id in ["c1", "c2", "c3"] {
            drain(id).await; // the welcomes
        }
        store.push_all(Some("c3"), text.into(), limits, None).await.unwrap();
        store.push_many(&["c3".to_owned()], "one".into(), limits, None).await.unwrap();
        let (first, second, third) = (drain("c1").await, drain("c2").await, drain("c3").await);
        let expected = serde_json::to_string(&[text]).unwrap();
        assert_eq!(crate::store::packets_text(&first), expected.as_bytes());
        let (a, b) = (first[0].quoted.as_ref().unwrap(), second[0].quoted.as_ref().unwrap());
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(b.get().map(String::as_str), Some(&expected[1..expected.len() - 1]));
        assert_eq!(crate::store::packets_text(&second), expected.as_bytes());
        assert_eq!(third.len(), 1);
        assert!(third[0].quoted.is_none(), "a packet for one queue");
    }

    /// A sync's rounds in one step each: the first begins the poll (a later sync's first
    /// round supersedes it); a round that finds nothing gets a wake-up made before any push
    /// that follows; a round that finds something gets none to wait on.
    #[tokio::test]
    async fn a_poll_round_begins_drains_and_subscribes_in_one_step() {
        let store = store_with_c1().await;
        let limits = QueueLimits { max_packets: 10, max_bytes: 100 };
        let welcome = store.poll_round("c1", None, None, 5, false).await.unwrap();
        assert_eq!(welcome.drained.unwrap().packets.len(), 1);
        assert!(matches!(welcome.wakeup, Wakeup::Gone), "nothing to wait for");
        let mut empty = store.poll_round("c1", None, Some(welcome.ticket), 6, true).await.unwrap();
        assert!(empty.drained.unwrap().packets.is_empty());
        assert!(!fired(&mut empty.wakeup).await);
        store.push("c1", "p".into(), limits, None).await.unwrap();
        assert!(fired(&mut empty.wakeup).await);
        let next = store.poll_round("c1", None, None, 7, false).await.unwrap();
        assert_eq!(next.ticket, welcome.ticket + 1, "a new sync begins a new poll");
        assert_eq!(next.drained.unwrap().packets.len(), 1);
        let old = store.poll_round("c1", None, Some(welcome.ticket), 8, true).await.unwrap();
        assert!(old.drained.unwrap().superseded);
        let unknown = store.poll_round("nobody", None, None, 9, false).await.unwrap();
        assert!(unknown.drained.unwrap().unknown);
    }
}
