//! Plugins: the trait an application embedding pollgate implements, and the context a
//! plugin works through. The system plugin and the filesystem plugin are built this way
//! ([`crate::server::plugins`] assembles them).
//!
//! The plugins and the engine face each other: the engine runs the plugins, and a plugin
//! reaches the engine only through its [`RequestContext`].

pub(crate) mod filesystem;
pub(crate) mod system;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use crate::config::{Config, StoreKind};
use crate::engine::Engine;
use crate::protocol::TokenView;
use crate::store::{PushOutcome, StoreError, StoreResult};

pub use crate::http::body::Body;
pub use crate::http::error::HttpError;
pub use crate::params::Params;
pub use crate::protocol::{now_ms, Token, TokenFields};
pub use crate::store::CloseReason;

/// The system plugin's hot path, which the engine runs itself: a `send` or an `echo` read in
/// place ([`TokenView`]), without the token map the generic dispatch
/// ([`Plugin::process_token`]) builds. The system plugin is the one implementation; the
/// server hands it to the engine with the plugins it assembles.
pub(crate) trait HotTokens: Send + Sync {
    /// Runs a system `send` (`send` true) or `echo` (false).
    fn run<'a>(&'a self, ctx: &'a mut RequestContext<'_>, send: bool, view: &'a TokenView<'_>) -> BoxFuture<'a, ()>;
}

/// A response to an HTTP action a plugin serves itself (such as `download`).
pub type ActionResponse = hyper::Response<Body>;

/// A server-side extension. Tokens whose `ns` equals [`Plugin::namespace`] are handed to
/// [`Plugin::process_token`]; the other hooks are optional.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The token namespace this plugin answers, e.g. `com.example.chat`.
    fn namespace(&self) -> &str;

    /// Handles one token sent by a client. Send packets through `ctx`: the first packet for
    /// the requesting connector becomes the HTTP response body, the rest are queued.
    async fn process_token(&self, ctx: &mut RequestContext<'_>, token: &Token);

    /// The HTTP actions (besides the protocol's own) this plugin serves.
    fn actions(&self) -> &[&'static str] {
        &[]
    }

    /// Serves one of [`Plugin::actions`] for a live connector. A store failure met
    /// through `ctx` fails the action (503), whatever it returns.
    async fn process_action(
        &self,
        _ctx: &mut RequestContext<'_>,
        _action: &str,
        _params: &Params,
    ) -> Result<ActionResponse, HttpError> {
        Err(HttpError::InvalidRequest)
    }

    /// A connector was opened (its welcome is queued). A store failure met through `ctx`
    /// fails the open (503) and undoes it (`Engine::open`).
    async fn connector_started(&self, _ctx: &mut RequestContext<'_>) {}

    /// A connector was closed, for any reason. Runs once per connector; `ctx` is the closed
    /// connector's (its id and session), with nothing to answer: what it sends goes to other
    /// connectors, best effort.
    async fn connector_stopped(&self, _ctx: &mut RequestContext<'_>, _reason: CloseReason) {}
}

/// What became of a packet sent to one connector ([`RequestContext::deliver_text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the target, or made the response's body.
    Delivered,
    /// There is no live connector of that id.
    NoTarget,
    /// Not queued: the target's queue was full (it is being closed), or the store failed
    /// (recorded: the request then fails with 503).
    Dropped,
}

/// What a plugin sees of one request: who sent it, and the ways to answer and reach others.
pub struct RequestContext<'a> {
    pub(crate) engine: &'a Arc<Engine>,
    /// The requesting connector's id (its public `sourceId`).
    pub connector_id: &'a str,
    /// The id of the requesting connector's session.
    pub session_id: &'a str,
    /// The first packet addressed to the requester, which becomes the response body.
    body: Option<String>,
    /// Whether packets for the requester go to `body` (true within an HTTP request).
    captures_body: bool,
    /// Within an idempotent send: its `seq`, and how many packets it queued so far. The
    /// packets carry `once` keys (sender, seq, count), so a re-run queues none twice.
    send_seq: Option<(u64, u32)>,
    /// The store failed to queue a packet: the request fails (503) instead of answering as
    /// if it had been delivered.
    store_error: Option<StoreError>,
    /// The session's rights entries as the request's touch read them (a shared store reads
    /// them in the same step: [`crate::store::Store::touch_reading`]), for the first rights
    /// check of a `send`; taken by it, so any later check reads the store.
    rights: Option<Token>,
}

impl<'a> RequestContext<'a> {
    /// The context of a request of `connector_id`; `captures_body`: whether its first packet
    /// for the requester becomes the response body.
    pub(crate) fn new(
        engine: &'a Arc<Engine>,
        connector_id: &'a str,
        session_id: &'a str,
        captures_body: bool,
    ) -> Self {
        RequestContext {
            engine,
            connector_id,
            session_id,
            body: None,
            captures_body,
            send_seq: None,
            store_error: None,
            rights: None,
        }
    }

    /// Sets the rights entries read with the request's touch (see the field).
    pub(crate) fn set_rights(&mut self, rights: Option<Token>) {
        self.rights = rights;
    }

    pub(crate) fn take_rights(&mut self) -> Option<Token> {
        self.rights.take()
    }

    /// Whether the next packet for the requester becomes the response body.
    fn body_is_open(&self) -> bool {
        self.captures_body && self.body.is_none()
    }

    /// Marks this context as running the idempotent send `seq`.
    pub(crate) fn set_send_seq(&mut self, seq: Option<u64>) {
        self.send_seq = seq.map(|s| (s, 0));
    }

    /// The `once` key of the next packet this context queues. Only a shared store needs
    /// them (another node may re-run a send whose node died); the memory store ignores them.
    fn next_once_key(&mut self) -> Option<String> {
        let (seq, count) = self.send_seq.as_mut()?;
        *count += 1;
        let shared = self.engine.config.store != StoreKind::Memory;
        shared.then(|| format!("{}:{seq}:{count}", self.connector_id))
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The response envelope for `request` (code 0, `ok`).
    pub fn response(&self, request: &Token) -> Token {
        crate::protocol::response(request)
    }

    /// Sends the requester the standard response to `request` (code 0, `ok`).
    pub async fn reply_ok(&mut self, request: &(impl TokenFields + Sync)) {
        let id = self.connector_id;
        self.send_text(id, crate::protocol::response_text(request)).await;
    }

    /// Sends a token to the requester.
    pub async fn reply(&mut self, token: Token) {
        let id = self.connector_id;
        self.send(id, &token).await;
    }

    /// Sends a token to any live connector; false if there is none of that id, or if the
    /// store failed (the request then fails with 503 rather than look delivered).
    pub async fn send(&mut self, target: &str, token: &Token) -> bool {
        self.send_text(target, crate::protocol::to_text(token)).await
    }

    /// [`RequestContext::send`] of a token already serialised.
    pub async fn send_text(&mut self, target: &str, text: String) -> bool {
        self.deliver_text(target, text).await == Delivery::Delivered
    }

    /// [`RequestContext::send_text`], telling a target that does not exist (or is closed)
    /// from a packet that was not queued, in one store step: a handler that needs the target
    /// to exist need not look it up first. The requester exists while its request runs.
    pub async fn deliver_text(&mut self, target: &str, text: String) -> Delivery {
        if target == self.connector_id && self.body_is_open() {
            self.body = Some(text);
            return Delivery::Delivered;
        }
        let once = self.next_once_key();
        match self.engine.deliver(target, text.into(), once.as_deref()).await {
            Ok(PushOutcome::Queued) => Delivery::Delivered,
            Ok(PushOutcome::Gone) => Delivery::NoTarget,
            Ok(PushOutcome::Overflow) => Delivery::Dropped,
            Err(e) => {
                self.store_error.get_or_insert(e);
                Delivery::Dropped
            }
        }
    }

    /// Sends a token to many connectors (the requester's copy follows the body rule).
    pub async fn send_many(&mut self, targets: &[String], token: &Token) {
        let text = crate::protocol::to_text(token);
        let mut others: Vec<String> = Vec::with_capacity(targets.len());
        for target in targets {
            if target == self.connector_id && self.body_is_open() {
                self.body = Some(text.clone());
            } else {
                others.push(target.clone());
            }
        }
        let once = self.next_once_key();
        if let Err(e) = self.engine.deliver_many(&others, text.into(), once.as_deref()).await {
            self.store_error.get_or_insert(e);
        }
    }

    /// Sends a token to every live connector; to the requester only if `requester_included`
    /// (its copy follows the body rule).
    pub async fn send_all(&mut self, requester_included: bool, token: &Token) {
        let text = crate::protocol::to_text(token);
        let mut except = Some(self.connector_id);
        if requester_included {
            if self.body_is_open() {
                self.body = Some(text.clone());
            } else {
                except = None;
            }
        }
        let once = self.next_once_key();
        if let Err(e) = self.engine.deliver_all(except, text.into(), once.as_deref()).await {
            self.store_error.get_or_insert(e);
        }
    }

    /// Records a store failure met while handling the request (the first one wins): the
    /// request then fails with 503, and an idempotent send gives its claim back so that a
    /// retry runs it again, instead of answering as if the store had said "no".
    pub(crate) fn store_failed(&mut self, e: StoreError) {
        self.store_error.get_or_insert(e);
    }

    /// The value of a store call, or `None` with its failure recorded (see
    /// [`RequestContext::store_failed`]). On `None` a handler stops (`let Some(x) =
    /// ctx.checked(..) else { return }`): whatever it would answer next rests on a reading
    /// the store did not give.
    pub(crate) fn checked<T>(&mut self, result: StoreResult<T>) -> Option<T> {
        result.map_err(|e| self.store_failed(e)).ok()
    }

    /// The requester's session storage, or `None` if the store failed (recorded: the request
    /// then fails with 503): never an empty session in its place, which would read as "not
    /// logged in" or "no rights".
    pub async fn session(&mut self) -> Option<Token> {
        let storage = self.engine.store.session_storage(self.session_id).await;
        self.checked(storage)
    }

    /// The body collected so far, taken; a store failure while queuing comes first, so the
    /// request does not look delivered.
    pub(crate) fn take_body(&mut self) -> Result<Option<String>, StoreError> {
        self.take_store_error()?;
        Ok(self.body.take())
    }

    /// The store failure recorded so far, taken: for the requests whose answer is not the
    /// body (an action a plugin serves, an open), which fail with it all the same.
    pub(crate) fn take_store_error(&mut self) -> Result<(), StoreError> {
        self.store_error.take().map_or(Ok(()), Err)
    }
}
