//! The engine: connectors and sessions and the only owner of their life cycle (open, close,
//! reap, evict), the long-poll, idempotent sends, and token dispatch to plugins.
//!
//! Every close goes through [`Engine::close`], which the store lets succeed once per
//! connector, so `disconnect` events and plugin hooks run exactly once.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use memchr::memmem::Finder;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{may_send, Users, RIGHTS_KEYS};
use crate::config::{Config, OnMaxConnections};
use crate::metrics::Metrics;
use crate::plugins::{HotTokens, Plugin, RequestContext};
use crate::protocol::system::{no_target, one_step_send, welcome, EVENTS_EXCLUDE};
use crate::protocol::{self, Token, TokenFields};
use crate::store::{
    CloseReason, ConnectorInfo, Drained, OpenOutcome, PushOutcome, QueueLimits, SendClaim, SendStep, SendStepped,
    Store, StoreError,
};
use crate::timer::ConnTimer;

/// Engine failures; [`crate::http`] maps each to one status and body.
#[derive(Debug)]
pub enum EngineError {
    /// `open` on a live connector, or another action on an unknown one.
    InvalidState,
    /// `maxconnections` reached with `onmaxconnections = "reject"`.
    TooManyConnections,
    /// `ack` beyond the last sequence number issued (which is given).
    AckAhead(u64),
    /// A `send` with this `seq` is running right now.
    SendInProgress,
    /// A `send` with this `seq` ran too long ago for its response to be kept.
    SendForgotten,
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(e)
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// Who is opening a connector.
pub struct OpenRequest<'a> {
    pub connector_id: &'a str,
    /// The client's `sessionId`, if it gave one.
    pub session: Option<&'a str>,
    pub address: &'a str,
    pub user_agent: &'a str,
}

pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub users: Arc<Users>,
    /// The system plugin first, then the application's plugins ([`crate::server::plugins`]).
    plugins: Vec<Arc<dyn Plugin>>,
    /// The system plugin's `send` and `echo`, run on the hot path without the generic dispatch.
    hot: Arc<dyn HotTokens>,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// Cancelled once this node has handed over or closed its connectors (the last step of
    /// shutdown before connections end): held polls answer at once.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    limits: QueueLimits,
}

/// What [`Engine::send_in_one_step`] did.
enum OneStep {
    /// The send's answer, as [`Engine::send_request`] gives it.
    Done(Option<Option<String>>),
    /// Nothing: the store cannot take this send in one step ([`SendStepped::Split`]), and
    /// the caller takes it step by step.
    Split,
}

impl Engine {
    /// An engine running `plugins`, the system plugin first ([`crate::server::plugins`]).
    pub(crate) fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        users: Arc<Users>,
        plugins: Vec<Arc<dyn Plugin>>,
        hot: Arc<dyn HotTokens>,
        metrics: Arc<Metrics>,
    ) -> Arc<Engine> {
        let limits = QueueLimits { max_packets: config.max_queue_packets, max_bytes: config.max_queue_bytes };
        let (draining, shutdown) = (CancellationToken::new(), CancellationToken::new());
        Arc::new(Engine { config, store, users, plugins, hot, draining, shutdown, metrics, limits })
    }

    /// The plugin serving an extra HTTP action, if any.
    pub fn action_plugin(&self, action: &str) -> Option<Arc<dyn Plugin>> {
        self.plugins.iter().find(|p| p.actions().contains(&action)).cloned()
    }

    /// Opens a connector: admission, session, welcome queued as packet 1, plugin hooks.
    pub async fn open(self: &Arc<Self>, req: OpenRequest<'_>) -> EngineResult<()> {
        let now = protocol::now_ms();
        let session_id = match req.session {
            Some(s) => protocol::session_id(s),
            None => protocol::random_session_id(),
        };
        let storage = self.store.session_storage(&session_id).await?;
        let welcome: Arc<str> = protocol::to_text(&welcome(&self.config, req.connector_id, &storage)).into();
        let info = ConnectorInfo {
            id: req.connector_id.to_owned(),
            session_id: session_id.clone(),
            address: req.address.to_owned(),
            user_agent: req.user_agent.to_owned(),
            opened_ms: now,
            last_active_ms: now,
        };
        // One eviction makes room for one open; another node may take it, so try a few times.
        for _ in 0..4 {
            match self
                .store
                .open(info.clone(), req.session.is_some(), self.config.maxconnections, welcome.clone())
                .await?
            {
                OpenOutcome::Opened => {
                    tracing::debug!(source_id = %req.connector_id, "connector opened");
                    return self.start(req.connector_id, &session_id).await;
                }
                OpenOutcome::Exists => return Err(EngineError::InvalidState),
                OpenOutcome::Full if self.config.onmaxconnections == OnMaxConnections::Reject => break,
                OpenOutcome::Full => match self.store.least_recent().await? {
                    Some(victim) => {
                        if self.close(&victim, CloseReason::Evicted, true).await {
                            self.metrics.evictions.inc();
                        }
                    }
                    None => break,
                },
            }
        }
        self.metrics.admissions_rejected.inc();
        Err(EngineError::TooManyConnections)
    }

    /// Runs the plugins' `connector_started` for a connector just opened. A store failure in
    /// one stops them and undoes the open (removed at once, as a client's close), so that the
    /// open answers 503 and its retry opens afresh rather than meet `Invalid connection
    /// state!`. Only the plugins already started hear of the close (`connector_stopped`); if
    /// the store cannot even remove it, the reaper does when its session times out.
    async fn start(self: &Arc<Self>, id: &str, session_id: &str) -> EngineResult<()> {
        let mut ctx = RequestContext::new(self, id, session_id, false);
        for (started, plugin) in self.plugins.iter().enumerate() {
            plugin.connector_started(&mut ctx).await;
            let Err(e) = ctx.take_store_error() else { continue };
            match self.store.close(id, CloseReason::Client, false, None).await {
                Ok(Some(info)) => {
                    let mut stopped = RequestContext::new(self, &info.id, &info.session_id, false);
                    for plugin in &self.plugins[..started] {
                        plugin.connector_stopped(&mut stopped, CloseReason::Client).await;
                    }
                }
                Ok(None) => {}
                Err(undo) => tracing::warn!(source_id = %id, error = %undo, "open failed half-way and was not undone"),
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Records activity of a live connector (pushes its session's inactivity deadline) and
    /// returns its session id; `None` if there is no live connector of that id.
    pub async fn touch(&self, id: &str) -> EngineResult<Option<String>> {
        Ok(self.store.touch(id, protocol::now_ms()).await?)
    }

    /// [`Engine::touch`] for a `send`: the session's rights entries come with the session id
    /// where the store reads them in the same step ([`Store::touch_reading`]), to be passed
    /// to [`Engine::send`].
    pub async fn touch_for_send(&self, id: &str) -> EngineResult<Option<(String, Option<Token>)>> {
        Ok(self.store.touch_reading(id, protocol::now_ms(), &RIGHTS_KEYS).await?)
    }

    /// Closes a connector once: server-side reasons queue the close command, a client's
    /// `close` removes it at once. Runs the plugins' `connector_stopped` (the `disconnect`
    /// event) unless `events` is false. Returns whether this call closed it; a store failure
    /// is logged and reads as false (for closes nobody waits on: evictions, overflows).
    pub async fn close(self: &Arc<Self>, id: &str, reason: CloseReason, events: bool) -> bool {
        match self.try_close(id, reason, events).await {
            Ok(closed) => closed,
            Err(e) => {
                tracing::warn!(source_id = %id, error = %e, "close failed");
                false
            }
        }
    }

    /// [`Engine::close`] for a request that asked for it: a store failure is an error (503),
    /// not "already closed".
    pub async fn try_close(self: &Arc<Self>, id: &str, reason: CloseReason, events: bool) -> Result<bool, StoreError> {
        self.close_with(id, reason, events, None).await
    }

    /// [`Engine::close`], queuing `farewell` just before the close command (see
    /// [`Store::close`]), and telling a store failure from "already closed".
    async fn close_with(
        self: &Arc<Self>,
        id: &str,
        reason: CloseReason,
        events: bool,
        farewell: Option<&str>,
    ) -> Result<bool, StoreError> {
        let notify = reason != CloseReason::Client;
        let Some(info) = self.store.close(id, reason, notify, farewell).await? else { return Ok(false) };
        tracing::debug!(source_id = %id, reason = reason.as_str(), "connector closed");
        self.metrics.closed(reason.as_str());
        if events {
            let mut ctx = RequestContext::new(self, &info.id, &info.session_id, false);
            for plugin in &self.plugins {
                plugin.connector_stopped(&mut ctx, reason).await;
            }
        }
        Ok(true)
    }

    /// Queues a packet for a connector. A connector whose queue overflows is closed (in the
    /// background, so the sender never waits for it). `once`: see [`Store::push`].
    pub async fn deliver(
        self: &Arc<Self>,
        target: &str,
        text: Arc<str>,
        once: Option<&str>,
    ) -> Result<PushOutcome, StoreError> {
        let outcome = self.store.push(target, text, self.limits, once).await?;
        match outcome {
            PushOutcome::Queued => {
                self.metrics.packets_queued.inc();
            }
            PushOutcome::Gone => {}
            PushOutcome::Overflow => self.close_overflowed(vec![target.to_owned()]),
        }
        Ok(outcome)
    }

    /// Queues one packet for many connectors.
    pub async fn deliver_many(
        self: &Arc<Self>,
        targets: &[String],
        text: Arc<str>,
        once: Option<&str>,
    ) -> Result<(), StoreError> {
        if targets.is_empty() {
            return Ok(());
        }
        let overflowed = self.store.push_many(targets, text, self.limits, once).await?;
        // Closed connectors among the targets are counted too: close enough for a rate.
        self.metrics.packets_queued.inc_by((targets.len() - overflowed.len()) as u64);
        self.close_overflowed(overflowed);
        Ok(())
    }

    /// Queues one packet for every live connector but `except` (a broadcast).
    pub async fn deliver_all(
        self: &Arc<Self>,
        except: Option<&str>,
        text: Arc<str>,
        once: Option<&str>,
    ) -> Result<(), StoreError> {
        let fanout = self.store.push_all(except, text, self.limits, once).await?;
        self.metrics.packets_queued.inc_by(fanout.queued as u64);
        self.close_overflowed(fanout.overflowed);
        Ok(())
    }

    fn close_overflowed(self: &Arc<Self>, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            for id in ids {
                if engine.close(&id, CloseReason::QueueOverflow, true).await {
                    tracing::info!(source_id = %id, "connector closed: queue overflow");
                }
            }
        });
    }

    /// A `sync`: drains the queue, waiting up to `wait` (capped by `max_sync_wait`) for a
    /// packet. A newer sync on the same connector makes this one answer `[]` at once. The
    /// sync is recorded as a request of the connector (as [`Engine::touch`]) in the store
    /// step that starts it and, if it waited, in the drain that ends it, so that the reaper
    /// counts from its end; for a sync that answered at once, its start is its end.
    ///
    /// The wait runs on `timer`: a connection's own (see [`crate::timer`]), or a
    /// `ConnTimer::default()` of its own.
    pub async fn sync(&self, id: &str, ack: Option<u64>, wait: Duration, timer: &ConnTimer) -> EngineResult<Drained> {
        let wait = wait.min(Duration::from_millis(self.config.max_sync_wait));
        let deadline = Instant::now() + wait;
        let mut last_round = wait.is_zero();
        let mut ticket = None;
        // A flag, not the time the wait began: a held poll's state fits a 512-byte block, and
        // 16 bytes more took it to the next size (640), 128 bytes per held poll.
        let mut waited = false;
        loop {
            // The first round begins the poll; every round makes its wake-up before draining,
            // so a packet queued in between still wakes us.
            // In a block of its own, so an empty drain does not stay in the held poll's state.
            let mut wakeup = {
                let round = self.store.poll_round(id, ack, ticket, protocol::now_ms(), waited).await?;
                ticket = Some(round.ticket);
                let drained = round.drained.map_err(EngineError::AckAhead)?;
                if last_round
                    || !drained.packets.is_empty()
                    || drained.superseded
                    || drained.unknown
                    || drained.close_reason.is_some()
                {
                    self.metrics.queue_depth.observe(drained.packets.len() as f64);
                    self.metrics.packets_delivered.inc_by(drained.packets.len() as u64);
                    return Ok(drained);
                }
                round.wakeup
            };
            // Shutdown wakes every held poll through the store (`Store::wake_all`, after the
            // token is cancelled), so a poll does not carry a wait on the token as well.
            if self.shutdown.is_cancelled() {
                last_round = true;
                continue;
            }
            let _holding = Holding::new(&self.metrics.held_polls);
            waited = true;
            tokio::select! {
                _ = wakeup.changed() => {}
                _ = timer.sleep_until(deadline) => last_round = true,
            }
        }
    }

    /// A `send` request of connector `id`: on a store that takes a plain system `send` in
    /// one step ([`Store::sends_in_one_step`]), that step; any other token, or on another
    /// store, a touch and [`Engine::send`]. Returns the response body, or `None` if no live
    /// connector has the id.
    pub async fn send_request(
        self: &Arc<Self>,
        id: &str,
        data: &str,
        seq: Option<u64>,
    ) -> EngineResult<Option<Option<String>>> {
        if self.store.sends_in_one_step() {
            if let Some(token) = one_step_send(data) {
                if let OneStep::Done(answer) = self.send_in_one_step(id, &token, seq).await? {
                    return Ok(answer);
                }
            }
        }
        let Some((session_id, rights)) = self.touch_for_send(id).await? else { return Ok(None) };
        self.send(id, &session_id, data, seq, rights).await.map(Some)
    }

    /// The system plugin's `send` of `token` as one store step ([`Store::send_step`]):
    /// the same packets and answers, decided by the store. Only a send that fails (access
    /// denied, no target) with a `seq` takes a second step, to record its answer.
    async fn send_in_one_step(
        self: &Arc<Self>,
        id: &str,
        token: &protocol::TokenView<'_>,
        seq: Option<u64>,
    ) -> EngineResult<OneStep> {
        let target = token.str_field("targetId").unwrap_or_default();
        let forwarded = token.text_with_source(id);
        let reply = (token.bool_field("responseRequested") != Some(false)).then(|| protocol::response_text(token));
        // As the plugin does it: the first packet for the requester is the body, the rest
        // is queued.
        let (packets, body) = match (&*target == id, reply.as_deref()) {
            (true, Some(reply)) => (vec![(id, reply)], Some(forwarded.as_str())),
            (true, None) => (Vec::new(), Some(forwarded.as_str())),
            (false, reply) => (vec![(&*target, forwarded.as_str())], reply),
        };
        let step = SendStep {
            id,
            now_ms: protocol::now_ms(),
            seq,
            allowed: &may_send,
            rights_keys: &RIGHTS_KEYS,
            packets: &packets,
            body,
            limits: self.limits,
        };
        let stepped = match self.store.send_step(&step).await {
            Ok(stepped) => stepped,
            Err(e) => {
                // The step queued nothing if it failed in Redis (its queues are its first
                // writes); a claim it made is given back, so a retry runs at once.
                if let Some(seq) = seq {
                    let _ = self.store.release_send(id, seq).await;
                }
                return Err(e.into());
            }
        };
        let failure = match stepped {
            SendStepped::Split => return Ok(OneStep::Split),
            SendStepped::Unknown => return Ok(OneStep::Done(None)),
            SendStepped::Replay(body) => return Ok(OneStep::Done(Some(body))),
            SendStepped::InProgress => return Err(EngineError::SendInProgress),
            SendStepped::Forgotten => return Err(EngineError::SendForgotten),
            SendStepped::Done { overflowed } => {
                self.metrics.packets_queued.inc_by((packets.len() - overflowed.len()) as u64);
                self.close_overflowed(overflowed);
                return Ok(OneStep::Done(Some(body.map(str::to_owned))));
            }
            SendStepped::Denied => protocol::error_text(token, "access denied"),
            SendStepped::NoTarget => protocol::error_text(token, &no_target(&target)),
        };
        if let Some(seq) = seq {
            let mut claim = ClaimGuard(Some((self.clone(), id.to_owned(), seq)));
            self.store.complete_send(id, seq, Some(failure.clone())).await?;
            claim.disarm();
        }
        Ok(OneStep::Done(Some(Some(failure))))
    }

    /// Runs a token sent with `send`, at most once per `seq` when one is given. Returns the
    /// response body: the first packet produced for the sender, if any. `rights`: the
    /// session's rights entries as [`Engine::touch_for_send`] read them, if it did.
    pub async fn send(
        self: &Arc<Self>,
        id: &str,
        session_id: &str,
        data: &str,
        seq: Option<u64>,
        rights: Option<Token>,
    ) -> EngineResult<Option<String>> {
        let mut claim = ClaimGuard(None);
        if let Some(seq) = seq {
            match self.store.claim_send(id, seq).await? {
                SendClaim::Fresh => claim = ClaimGuard(Some((self.clone(), id.to_owned(), seq))),
                SendClaim::Replay(body) => return Ok(body),
                SendClaim::InProgress => return Err(EngineError::SendInProgress),
                SendClaim::Forgotten => return Err(EngineError::SendForgotten),
            }
        }
        // A store failure fails the send before it is recorded, and gives its claim back (if
        // the store can be reached; otherwise the claim's lease runs out): a retry re-runs
        // it, and its once-keys keep what was queued from being doubled. A panic below, or
        // the request dropped half-way, gives it back through the guard.
        let body = match self.process_text_with(id, session_id, data, seq, rights).await {
            Ok(body) => body,
            Err(e) => {
                if let Some(seq) = seq {
                    claim.disarm();
                    let _ = self.store.release_send(id, seq).await;
                }
                return Err(e);
            }
        };
        if let Some(seq) = seq {
            self.store.complete_send(id, seq, body.clone()).await?;
            claim.disarm();
        }
        Ok(body)
    }

    /// Parses and dispatches one token; returns the body. `seq`: the idempotent send it runs;
    /// `rights`: the session's rights entries, if they were read already.
    async fn process_text_with(
        self: &Arc<Self>,
        id: &str,
        session_id: &str,
        data: &str,
        seq: Option<u64>,
        rights: Option<Token>,
    ) -> EngineResult<Option<String>> {
        // The hot paths: a system `send` or `echo` runs on its token read in place. A text
        // that could be one (it has `"send"` or `"echo"`) is read so first; what turns out to
        // be another token is made a `Token` from that reading, and the others are parsed
        // straight into one.
        // Searches built once: building one costs more than a search through a token.
        static SEND: LazyLock<Finder> = LazyLock::new(|| Finder::new(br#""send""#));
        static ECHO: LazyLock<Finder> = LazyLock::new(|| Finder::new(br#""echo""#));
        let bytes = data.as_bytes();
        let hot = SEND.find(bytes).is_some() || ECHO.find(bytes).is_some();
        let mut token = if hot {
            let Some(view) = protocol::TokenView::parse(data) else { return Ok(None) };
            let kind = match view.str_field("ns").as_deref() == Some(protocol::NS_SYSTEM) {
                true => view.str_field("type"),
                false => None,
            };
            if let Some(kind @ ("send" | "echo")) = kind.as_deref() {
                // The system plugin is always the first plugin, so it would get this token.
                let mut ctx = RequestContext::new(self, id, session_id, true);
                ctx.set_send_seq(seq);
                if kind == "send" {
                    ctx.set_rights(rights);
                }
                self.hot.run(&mut ctx, kind == "send", &view).await;
                return Ok(ctx.take_body()?);
            }
            view.to_token()
        } else {
            let Some(token) = protocol::parse_token(data) else { return Ok(None) };
            token
        };
        protocol::normalize_ns(&mut token);
        self.process_token(id, session_id, &token, seq).await
    }

    /// Dispatches a token to the plugin of its `ns`; returns the body.
    pub async fn process_token(
        self: &Arc<Self>,
        id: &str,
        session_id: &str,
        token: &Token,
        seq: Option<u64>,
    ) -> EngineResult<Option<String>> {
        let mut ctx = RequestContext::new(self, id, session_id, true);
        ctx.set_send_seq(seq);
        match protocol::get_str(token, "ns") {
            Some(ns) => {
                // An unknown namespace gets no reply (docs/PROTOCOL.md, "Tokens": empty 200).
                if let Some(plugin) = self.plugins.iter().find(|p| p.namespace() == ns) {
                    plugin.process_token(&mut ctx, token).await;
                }
            }
            None if token.contains_key("utid") => {
                ctx.reply(protocol::error_response(token, "missing 'ns' argument")).await;
            }
            None => {}
        }
        Ok(ctx.take_body()?)
    }

    /// Sends an event to every live connector but `source`, skipping those whose session
    /// excludes it (`org.jwebsocket.plugins.system.events.exclude` contains `,name`). Events
    /// are best effort: a store failure drops the event (logged), and never sends it to a
    /// session whose exclusion could not be read.
    pub async fn broadcast_event(self: &Arc<Self>, source: Option<&str>, name: &str, event: &Token) {
        if let Err(e) = self.try_broadcast_event(source, name, event).await {
            tracing::warn!(error = %e, event = name, "event not delivered");
        }
    }

    async fn try_broadcast_event(
        self: &Arc<Self>,
        source: Option<&str>,
        name: &str,
        event: &Token,
    ) -> Result<(), StoreError> {
        let connectors = self.store.connectors().await?;
        let mut excluded_sessions: std::collections::HashMap<String, bool> = Default::default();
        let mut targets = Vec::with_capacity(connectors.len());
        for c in connectors {
            if Some(c.id.as_str()) == source {
                continue;
            }
            let excluded = match excluded_sessions.get(&c.session_id) {
                Some(x) => *x,
                None => {
                    let x = match self.store.session_get(&c.session_id, EVENTS_EXCLUDE).await? {
                        Some(serde_json::Value::String(list)) => list.contains(&format!(",{name}")),
                        _ => false,
                    };
                    excluded_sessions.insert(c.session_id.clone(), x);
                    x
                }
            };
            if !excluded {
                targets.push(c.id);
            }
        }
        self.deliver_many(&targets, protocol::to_text(event).into(), None).await
    }

    /// One pass of the reaper: closes the connectors of sessions idle for `timeout`, then
    /// forgets closed connectors whose close was not collected.
    pub async fn reap(self: &Arc<Self>) -> EngineResult<usize> {
        let now = protocol::now_ms();
        let timeout_ms = self.config.session_timeout().as_millis() as i64;
        let mut closed = 0;
        // A store failure ends the pass: the next one starts over (nothing is half-closed).
        for session in self.store.expired_sessions(now - timeout_ms).await? {
            for id in self.store.session_connectors(&session).await? {
                if self.close_with(&id, CloseReason::Timeout, true, None).await? {
                    closed += 1;
                }
            }
        }
        let record_retention_ms = self.config.session_retention as i64 * 1000;
        self.store.sweep(now, timeout_ms.min(300_000), record_retention_ms).await?;
        if closed > 0 {
            tracing::info!(closed, "reaper closed idle connectors");
        }
        Ok(closed)
    }

    /// Shutdown of this node. The last node of a cluster (or a node alone) closes every live
    /// connector, after the `systemStopping` event if configured (jWebSocket's rule: clients
    /// hear of it only when the whole system stops). A node with live peers closes nothing:
    /// its held polls are answered and its connectors are served by the others.
    pub async fn stop_all(self: &Arc<Self>) {
        match self.store.other_nodes(protocol::now_ms()).await {
            Ok(0) => {}
            Ok(others) => {
                tracing::info!(others, "other nodes are alive: leaving the connectors to them");
                let _ = self.store.leave().await;
                return;
            }
            Err(e) => {
                // Without the store nothing can be closed or handed over; clients come back
                // to whichever node serves them next.
                tracing::warn!(error = %e, "shutdown without the store: connectors left as they are");
                return;
            }
        }
        let _ = self.store.leave().await;
        let Ok(connectors) = self.store.connectors().await else { return };
        let farewell =
            self.config.notify_system_stopping.then(|| protocol::to_text(&protocol::event("systemStopping")));
        for c in connectors {
            if let Err(e) = self.close_with(&c.id, CloseReason::Shutdown, false, farewell.as_deref()).await {
                // The store went away: trying the rest would only make the shutdown wait.
                tracing::warn!(error = %e, "shutdown: the store failed; the other connectors are left as they are");
                return;
            }
        }
    }
}

/// The claim of an idempotent send while it runs: if the send ends without being recorded
/// or released (a panic in a plugin, or its request dropped because the client went away),
/// the claim is given back, so a retry runs it again instead of answering 409 until the
/// connector closes. The release is spawned: a drop, unwinding or not, cannot wait. (On the
/// memory store no step waits, so a dropped request never stops half-way through a send;
/// a panic can, see [`crate::panics`].)
struct ClaimGuard(Option<(Arc<Engine>, String, u64)>);

impl ClaimGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some((engine, id, seq)) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = engine.store.release_send(&id, seq).await;
            });
        }
    }
}

/// Counts a held poll for as long as it waits, however its wait ends (a client that goes
/// away drops it).
pub(crate) struct Holding<'a>(&'a Gauge);

impl<'a> Holding<'a> {
    pub(crate) fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Holding(gauge)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
