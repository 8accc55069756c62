//! The system plugin (`org.jwebsocket.plugins.system`): welcome, login and logout, send,
//! broadcast, session storage, events. Field order and message texts follow
//! `docs/PROTOCOL.md` ("The system plugin"), with the differences from jWebSocket listed there.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use futures_util::future::BoxFuture;

use super::{Delivery, HotTokens, Plugin, RequestContext};
use crate::auth::{authorities, has_right, is_authenticated, Right, RIGHTS_KEYS, RIGHT_SEND};
use crate::engine::Engine;
use crate::protocol::system::no_target;
use crate::protocol::{
    self, error_response, get_bool, get_int, get_str, Token, TokenFields, TokenView, ANONYMOUS, NS_SYSTEM, VENDOR,
    VERSION,
};
use crate::store::CloseReason;

static RIGHT_BROADCAST: LazyLock<Right> = LazyLock::new(|| Right::new("org.jwebsocket.plugins.system.broadcast"));
static RIGHT_JVMINFO: LazyLock<Right> = LazyLock::new(|| Right::new("org.jwebsocket.plugins.system.getjvminfo"));
const PUBLIC_PREFIX: &str = "public::";
const ECHO_TEST_DATA: &str = "jWebSocket Echo Simulation Data - ";

pub struct SystemPlugin;

impl SystemPlugin {
    /// The system plugin.
    pub fn new() -> SystemPlugin {
        SystemPlugin
    }
}

impl Default for SystemPlugin {
    fn default() -> Self {
        SystemPlugin::new()
    }
}

impl HotTokens for SystemPlugin {
    fn run<'a>(&'a self, ctx: &'a mut RequestContext<'_>, send: bool, view: &'a TokenView<'_>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match send {
                true => Self::send(ctx, view).await,
                false => Self::echo(ctx, view).await,
            }
        })
    }
}

/// Sets `sourceId`, in place if present, else at the end.
fn set_source(token: &mut Token, source: &str) {
    token.insert("sourceId".into(), source.into());
}

impl SystemPlugin {
    /// [`has_right`] for the requester's session, reading only the two keys it needs (a
    /// session's storage can be large; `send` and `broadcast` check on every call), in one
    /// store call and without copying them out. A store that cannot be read fails the
    /// request (503), not the check: a Redis restarting must not answer "access denied" to
    /// a logged-in client.
    ///
    /// The first check of a `send` uses the two keys as its request's touch read them, where
    /// the store read them there (see [`RequestContext::set_rights`]).
    async fn allowed(ctx: &mut RequestContext<'_>, right: &Right) -> bool {
        if let Some(session) = ctx.take_rights() {
            return has_right(&session, right);
        }
        let mut holds_right = false;
        let mut check = |session: &Token| holds_right = has_right(session, right);
        match ctx.engine.store.session_read(ctx.session_id, &RIGHTS_KEYS, &mut check).await {
            Ok(()) => holds_right,
            Err(e) => {
                ctx.store_failed(e);
                false
            }
        }
    }

    /// The `clientCount` of an event, or `None` if the store cannot count: the event is then
    /// not sent (events are best effort, as in [`Engine::broadcast_event`]; a count of 0
    /// would be a wrong one).
    async fn client_count(engine: &Engine) -> Option<i64> {
        match engine.store.connector_count().await {
            Ok(n) => Some(n as i64),
            Err(e) => {
                tracing::warn!(error = %e, "event not sent: the client count cannot be read");
                None
            }
        }
    }

    /// Replies with `code` -1 and `msg`.
    async fn fail(ctx: &mut RequestContext<'_>, token: &(impl TokenFields + Sync), msg: &str) {
        let id = ctx.connector_id;
        ctx.send_text(id, protocol::error_text(token, msg)).await;
    }

    /// The `targetId` of a token, or the answer to a token without one (`unid` names a
    /// node, which pollgate does not assign). Whether that connector exists is told by the
    /// delivery ([`RequestContext::deliver_text`]), not by a lookup before it.
    fn target_id<T: TokenFields>(token: &T) -> Result<Cow<'_, str>, String> {
        if let Some(unid) = token.str_field("unid") {
            return Err(format!("No target connector with node-id '{unid}' found."));
        }
        token.str_field("targetId").ok_or_else(|| no_target("null"))
    }

    /// `send`, for a [`Token`] or, on the hot path, a [`protocol::TokenView`] (see
    /// [`Engine::send`]).
    pub(crate) async fn send(ctx: &mut RequestContext<'_>, token: &(impl TokenFields + Sync)) {
        if !Self::allowed(ctx, &RIGHT_SEND).await {
            return Self::fail(ctx, token, "access denied").await;
        }
        let forward = token.str_field("action").as_deref() == Some("forward.json");
        // jWebSocket words a `forward.json` without a target differently (no space).
        let forward_failure = || {
            let id = token.str_field("targetId").unwrap_or(Cow::Borrowed("null"));
            format!("No target connector with endpoint-id'{id}' found.")
        };
        let target = match Self::target_id(token) {
            Ok(t) => t,
            Err(_) if forward => return Self::fail(ctx, token, &forward_failure()).await,
            Err(msg) => return Self::fail(ctx, token, &msg).await,
        };
        let text = if forward {
            let inner = token.str_field("data").and_then(|data| protocol::parse_token(&data)).unwrap_or_default();
            protocol::to_text(&inner)
        } else {
            token.text_with_source(ctx.connector_id)
        };
        if ctx.deliver_text(&target, text).await == Delivery::NoTarget {
            let msg = if forward { forward_failure() } else { no_target(&target) };
            return Self::fail(ctx, token, &msg).await;
        }
        if token.bool_field("responseRequested") != Some(false) {
            ctx.reply_ok(token).await;
        }
    }

    async fn respond(ctx: &mut RequestContext<'_>, token: &Token) {
        let target = match Self::target_id(token) {
            Ok(t) => t.into_owned(),
            Err(msg) => return Self::fail(ctx, token, &msg).await,
        };
        let mut forwarded = token.clone();
        forwarded.insert("type".into(), "response".into());
        set_source(&mut forwarded, ctx.connector_id);
        if ctx.deliver_text(&target, protocol::to_text(&forwarded)).await == Delivery::NoTarget {
            Self::fail(ctx, token, &no_target(&target)).await;
        }
    }

    async fn broadcast(ctx: &mut RequestContext<'_>, token: &Token) {
        if !Self::allowed(ctx, &RIGHT_BROADCAST).await {
            return Self::fail(ctx, token, "access denied").await;
        }
        let sender_included = get_bool(token, "senderIncluded") == Some(true);
        let mut out = token.clone();
        set_source(&mut out, ctx.connector_id);
        out.shift_remove("senderIncluded");
        out.shift_remove("responseRequested");
        ctx.send_all(sender_included, &out).await;
        if get_bool(token, "responseRequested") != Some(false) {
            ctx.reply_ok(token).await;
        }
    }

    async fn broadcast_to_shared_session(ctx: &mut RequestContext<'_>, token: &Token) {
        let sender_included = get_bool(token, "senderIncluded") == Some(true);
        let mut out = token.clone();
        set_source(&mut out, ctx.connector_id);
        let Some(connectors) = ctx.checked(ctx.engine.store.session_connectors(ctx.session_id).await) else { return };
        let targets: Vec<String> =
            connectors.into_iter().filter(|id| sender_included || id != ctx.connector_id).collect();
        ctx.send_many(&targets, &out).await;
        ctx.reply_ok(token).await;
    }

    /// The other connectors of the requester's session (who get a copy of a login or logout
    /// reply), or `None` if the store failed (recorded). Read before the change the reply
    /// reports, so that a failure here leaves nothing done.
    async fn session_others(ctx: &mut RequestContext<'_>) -> Option<Vec<String>> {
        let ids = ctx.checked(ctx.engine.store.session_connectors(ctx.session_id).await)?;
        Some(ids.into_iter().filter(|id| id != ctx.connector_id).collect())
    }

    /// Sends a copy of `reply` to `others`. The change it reports is made by then, so this
    /// is best effort: a failure is logged and the requester's answer stands (a 503 would
    /// make its retry answer "is authenticated").
    async fn copy_to(engine: &Arc<Engine>, others: &[String], reply: &Token) {
        if let Err(e) = engine.deliver_many(others, protocol::to_text(reply).into(), None).await {
            tracing::warn!(error = %e, "copy to the session's other connectors not delivered");
        }
    }

    /// Every store step before `session_login` only reads (or counts a failure, which is
    /// answered only once counted), so a store failure up to there answers 503 with nothing
    /// changed, and the retry runs afresh.
    async fn login(ctx: &mut RequestContext<'_>, token: &Token) {
        let engine = ctx.engine.clone();
        let Some(session) = ctx.session().await else { return };
        if is_authenticated(&session) {
            return Self::fail(ctx, token, "is authenticated").await;
        }
        let username = get_str(token, "username");
        let config = &engine.config;
        let now = protocol::now_ms();
        let window = (config.login_window * 1000) as i64;
        let keys = [
            format!("login-fail:connector:{}", ctx.connector_id),
            format!("login-fail:user:{}", username.unwrap_or("")),
        ];
        for key in &keys {
            // Unread, the limit on guesses would not hold: the request fails instead.
            let Some((count, free_at)) = ctx.checked(engine.store.recent_events(key, now, window).await) else {
                return;
            };
            if count >= config.login_max_failures {
                let secs = ((free_at - now).max(0) + 999) / 1000;
                let msg = format!("Too many failed logins, retry in {secs} seconds");
                return Self::fail(ctx, token, &msg).await;
            }
        }
        let password = get_str(token, "password");
        let authorities = match (username, password) {
            (Some(u), Some(p)) => engine.users.verify(u, p).await,
            _ => None,
        };
        let (Some(username), Some(authorities)) = (username, authorities) else {
            // A failure that cannot be counted is not answered either: a guesser would learn
            // the answer without spending an attempt.
            for key in &keys {
                if ctx.checked(engine.store.count_event(key, now, window).await).is_none() {
                    return;
                }
            }
            tracing::info!(source_id = %ctx.connector_id, "login failed");
            engine.metrics.login(false);
            let mut reply = error_response(token, "BadCredentialsException: Bad credentials");
            reply.insert("username".into(), username.map_or(Value::Null, Value::from));
            return ctx.reply(reply).await;
        };
        let mut entries = Token::new();
        entries.insert("$is_authenticated".into(), true.into());
        entries.insert("$username".into(), username.into());
        entries.insert("$uuid".into(), username.into());
        let joined: String = authorities.iter().map(|a| format!("{a} ")).collect();
        entries.insert("$authorities".into(), joined.into());
        let Some(others) = Self::session_others(ctx).await else { return };
        let Some(logged_in) = ctx.checked(engine.store.session_login(ctx.session_id, entries).await) else { return };
        if !logged_in {
            return Self::fail(ctx, token, "is authenticated").await;
        }
        tracing::info!(source_id = %ctx.connector_id, user = %username, "login");
        engine.metrics.login(true);
        let mut reply = ctx.response(token);
        reply.insert("uuid".into(), username.into());
        reply.insert("username".into(), username.into());
        let list = if authorities.is_empty() { vec![String::new()] } else { authorities };
        reply.insert("authorities".into(), list.into());
        ctx.reply(reply.clone()).await;
        Self::copy_to(&engine, &others, &reply).await;
        if config.broadcast_login_event {
            let Some(count) = Self::client_count(&engine).await else { return };
            let mut event = protocol::event("login");
            event.insert("username".into(), username.into());
            event.insert("clientCount".into(), count.into());
            event.insert("sourceId".into(), ctx.connector_id.into());
            engine.broadcast_event(Some(ctx.connector_id), "login", &event).await;
        }
    }

    /// The copies and the event go out before the session is cleared, as they always did
    /// (the event honours the session's own `events.exclude`, which the clear removes). So
    /// a store failing at the clear answers 503 after them, and the retry logs out again.
    async fn logout(ctx: &mut RequestContext<'_>, token: &Token) {
        let engine = ctx.engine.clone();
        let Some(session) = ctx.session().await else { return };
        if !is_authenticated(&session) {
            return Self::fail(ctx, token, "not authenticated").await;
        }
        let username = get_str(&session, "$username").unwrap_or_default().to_owned();
        let Some(others) = Self::session_others(ctx).await else { return };
        let mut reply = ctx.response(token);
        if engine.config.allow_anonymous {
            reply.insert("anonymous".into(), (username == ANONYMOUS).into());
        }
        ctx.reply(reply.clone()).await;
        Self::copy_to(&engine, &others, &reply).await;
        Self::logout_event(&engine, ctx.connector_id, &username).await;
        if ctx.checked(engine.store.session_clear(ctx.session_id).await).is_none() {
            return;
        }
        // Unlike jWebSocket, the connection is `anonymous` again rather than nameless.
        if engine.config.allow_anonymous
            && ctx.checked(engine.store.session_put(ctx.session_id, "$username", ANONYMOUS.into()).await).is_none()
        {
            return;
        }
        tracing::info!(source_id = %ctx.connector_id, "logout");
    }

    async fn logout_event(engine: &Arc<Engine>, source: &str, username: &str) {
        if engine.config.broadcast_logout_event {
            let Some(count) = Self::client_count(engine).await else { return };
            let mut event = protocol::event("logout");
            event.insert("username".into(), username.into());
            event.insert("clientCount".into(), count.into());
            event.insert("sourceId".into(), source.into());
            engine.broadcast_event(Some(source), "logout", &event).await;
        }
    }

    async fn get_authorities(ctx: &mut RequestContext<'_>, token: &Token) {
        let Some(session) = ctx.session().await else { return };
        if !is_authenticated(&session) {
            return Self::fail(ctx, token, "not authenticated").await;
        }
        let mut reply = ctx.response(token);
        reply.insert("username".into(), get_str(&session, "$username").unwrap_or_default().into());
        reply.insert("authorities".into(), authorities(&session).into());
        ctx.reply(reply).await;
    }

    async fn close(ctx: &mut RequestContext<'_>, token: &Token) {
        let engine = ctx.engine.clone();
        if get_int(token, "timeout").unwrap_or(0) > 0 && get_bool(token, "noGoodBye") != Some(true) {
            let mut bye = Token::new();
            bye.insert("type".into(), "goodBye".into());
            bye.insert("ns".into(), NS_SYSTEM.into());
            bye.insert("vendor".into(), VENDOR.into());
            bye.insert("version".into(), VERSION.into());
            bye.insert("sourceId".into(), ctx.connector_id.into());
            bye.insert("reason".into(), "client".into());
            ctx.reply(bye).await;
        }
        if get_bool(token, "noLogoutBroadcast") != Some(true) {
            let Some(session) = ctx.session().await else { return };
            if let Some(name) = get_str(&session, "$username") {
                Self::logout_event(&engine, ctx.connector_id, name).await;
            }
        }
        let events = get_bool(token, "noDisconnectBroadcast") != Some(true);
        // A close the store did not make fails the request: the connector is still live.
        if let Err(e) = engine.try_close(ctx.connector_id, CloseReason::CloseToken, events).await {
            ctx.store_failed(e);
        }
    }

    async fn get_clients(ctx: &mut RequestContext<'_>, token: &Token) {
        let Some(session) = ctx.session().await else { return };
        if get_str(&session, "$username").is_none() {
            return Self::fail(ctx, token, "not logged in").await;
        }
        let mode = get_int(token, "mode").unwrap_or(0);
        let store = ctx.engine.store.clone();
        let Some(connectors) = ctx.checked(store.connectors().await) else { return };
        let mut clients = Vec::new();
        for c in connectors {
            let Some(storage) = ctx.checked(store.session_storage(&c.session_id).await) else { return };
            let Some(name) = get_str(&storage, "$username") else { continue };
            let authenticated = is_authenticated(&storage);
            if (mode == 1 && !authenticated) || (mode == 2 && authenticated) {
                continue;
            }
            clients.push(format!("{name}@{}", c.id));
        }
        let mut reply = ctx.response(token);
        let count = clients.len();
        reply.insert("clients".into(), clients.into());
        reply.insert("count".into(), count.into());
        ctx.reply(reply).await;
    }

    /// `echo`, for a [`Token`] or, on the hot path, a [`protocol::TokenView`] (see
    /// [`Engine::send`]): the envelope with the request's `data`, written directly.
    pub(crate) async fn echo(ctx: &mut RequestContext<'_>, token: &(impl TokenFields + Sync)) {
        let Some(data) = token.str_field("data") else {
            return Self::fail(ctx, token, "missing 'data' argument for 'echo' command").await;
        };
        let mut reply = protocol::envelope_start(token, 0, "ok");
        protocol::push_str_field(&mut reply, "data", &data);
        let size = token.int_field("echoTestSize").unwrap_or(-1);
        if size > 0 {
            // Bounded by the frame size: the reply must fit what the client accepts.
            let size = (size as usize).min(ctx.engine.config.maxframesize);
            let text: String = ECHO_TEST_DATA.chars().cycle().take(size).collect();
            protocol::push_int_field(&mut reply, "echoTestSize", size as i64);
            protocol::push_str_field(&mut reply, "echoTestData", &text);
        }
        let delay = token.int_field("delay").unwrap_or(-1);
        if delay > 0 {
            Self::sleep(ctx.engine, delay).await;
            protocol::push_int_field(&mut reply, "delayed", delay);
        }
        let id = ctx.connector_id;
        ctx.send_text(id, protocol::envelope_end(reply)).await;
    }

    /// Sleeps for a client-requested time, bounded by `max_sync_wait` and shutdown.
    async fn sleep(engine: &Engine, ms: i64) {
        let ms = (ms.max(0) as u64).min(engine.config.max_sync_wait);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = engine.shutdown.cancelled() => {}
        }
    }

    async fn wait(ctx: &mut RequestContext<'_>, token: &Token) {
        let duration = get_int(token, "duration").unwrap_or(0);
        let wanted = get_bool(token, "responseRequested") != Some(false);
        if duration < 0 {
            if wanted {
                Self::fail(ctx, token, "missing or invalid 'duration' argument for 'wait' command").await;
            }
            return;
        }
        Self::sleep(ctx.engine, duration).await;
        if wanted {
            let mut reply = ctx.response(token);
            reply.insert("duration".into(), duration.into());
            ctx.reply(reply).await;
        }
    }

    /// Sets the session entries an open makes; `None` if the store failed (recorded).
    async fn start_session(ctx: &mut RequestContext<'_>) -> Option<()> {
        let store = ctx.engine.store.clone();
        let session = ctx.session().await?;
        if ctx.engine.config.allow_anonymous && get_str(&session, "$username").is_none() {
            ctx.checked(store.session_put(ctx.session_id, "$username", ANONYMOUS.into()).await)?;
        }
        ctx.checked(store.session_put(ctx.session_id, "$session_uid", protocol::random_session_id().into()).await)?;
        if !session.contains_key("$created_at") {
            ctx.checked(store.session_put(ctx.session_id, "$created_at", protocol::now_ms().into()).await)?;
        }
        Some(())
    }

    /// The storage a session token reads: own, or another client's (public entries only).
    /// `None` once answered: the store failed (recorded), or no such client (a token error).
    async fn target_storage(ctx: &mut RequestContext<'_>, token: &Token) -> Option<(Token, bool)> {
        let client = get_str(token, "clientId").unwrap_or(ctx.connector_id).to_owned();
        let public = get_bool(token, "public") == Some(true) || client != ctx.connector_id;
        let storage = if client == ctx.connector_id {
            ctx.session().await?
        } else {
            let Some(storage) = Self::client_storage(ctx, &client).await? else {
                Self::fail(ctx, token, &format!("Client with id '{client}' does not exists!")).await;
                return None;
            };
            storage
        };
        Some((storage, public))
    }

    /// The session storage of the live connector `client`: `Some(None)` if there is none,
    /// `None` if the store failed (recorded).
    async fn client_storage(ctx: &mut RequestContext<'_>, client: &str) -> Option<Option<Token>> {
        let store = ctx.engine.store.clone();
        let Some(connector) = ctx.checked(store.connector(client).await)? else { return Some(None) };
        ctx.checked(store.session_storage(&connector.session_id).await).map(Some)
    }

    fn prefixed(key: &str, public: bool) -> String {
        if public {
            format!("{PUBLIC_PREFIX}{key}")
        } else {
            key.to_owned()
        }
    }

    async fn session_token(ctx: &mut RequestContext<'_>, kind: &str, token: &Token) {
        if get_bool(token, "connectionStorage") == Some(true) {
            return Self::fail(ctx, token, "connectionStorage is not supported, use the session storage").await;
        }
        let store = ctx.engine.store.clone();
        let key = get_str(token, "key");
        let own_public = get_bool(token, "public") == Some(true);
        match kind {
            "sessionPut" => {
                let Some(key) = key else { return Self::fail(ctx, token, "Argument 'key' is required!").await };
                let key = Self::prefixed(key, own_public);
                if key.starts_with('$') {
                    let msg = format!("The given key '{key}', target a read only value!");
                    return Self::fail(ctx, token, &msg).await;
                }
                let value = match token.get("value") {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => return Self::fail(ctx, token, "Argument 'value' is required!").await,
                };
                // A store failure answers 503 (not jWebSocket's `Error getting the client
                // session storage!`): an idempotent send then gives its `seq` back.
                if ctx.checked(store.session_put(ctx.session_id, &key, value).await).is_none() {
                    return;
                }
                ctx.reply_ok(token).await;
            }
            "sessionRemove" => {
                let Some(key) = key else { return Self::fail(ctx, token, "Argument 'key' is required!").await };
                let key = Self::prefixed(key, own_public);
                if key.starts_with('$') {
                    let msg = format!("The given key '{key}', target a read only value!");
                    return Self::fail(ctx, token, &msg).await;
                }
                let Some(removed) = ctx.checked(store.session_remove(ctx.session_id, &key).await) else { return };
                match removed {
                    Some(value) => {
                        let mut reply = ctx.response(token);
                        reply.insert("data".into(), json!({"key": key, "value": value}));
                        ctx.reply(reply).await;
                    }
                    None => Self::fail(ctx, token, &format!("The key '{key}' does not exists!")).await,
                }
            }
            "sessionGet" | "sessionHas" => {
                let Some(key) = key else { return Self::fail(ctx, token, "Argument 'key' is required!").await };
                let Some((storage, public)) = Self::target_storage(ctx, token).await else { return };
                let key = Self::prefixed(key, public);
                let value = storage.get(&key);
                let mut reply = ctx.response(token);
                if kind == "sessionHas" {
                    reply.insert("data".into(), json!({"key": key, "exists": value.is_some()}));
                } else {
                    let Some(value) = value else {
                        let msg = format!("The key '{key}' does not exists in the targeted client session storage!");
                        return Self::fail(ctx, token, &msg).await;
                    };
                    reply.insert("data".into(), json!({"value": value, "key": key}));
                }
                ctx.reply(reply).await;
            }
            "sessionKeys" | "sessionGetAll" => {
                let Some((storage, public)) = Self::target_storage(ctx, token).await else { return };
                let entries = storage.into_iter().filter(|(k, _)| !public || k.starts_with(PUBLIC_PREFIX));
                let mut reply = ctx.response(token);
                if kind == "sessionKeys" {
                    let keys: Vec<String> = entries.map(|(k, _)| k).collect();
                    reply.insert("data".into(), keys.into());
                } else {
                    reply.insert("data".into(), Value::Object(entries.collect()));
                }
                ctx.reply(reply).await;
            }
            _ => {
                // sessionGetMany: each listed client's public entries.
                let clients = token.get("clients").and_then(Value::as_array).filter(|a| !a.is_empty());
                let Some(clients) = clients else {
                    return Self::fail(ctx, token, "Argument 'clients' is required!").await;
                };
                let keys = token.get("keys").and_then(Value::as_array).filter(|a| !a.is_empty());
                let Some(keys) = keys else { return Self::fail(ctx, token, "Argument 'keys' is required!").await };
                let mut data = serde_json::Map::new();
                for client in clients.iter().filter_map(Value::as_str) {
                    let Some(storage) = Self::client_storage(ctx, client).await else { return };
                    let storage = storage.unwrap_or_default();
                    let values: serde_json::Map<String, Value> = keys
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|k| {
                            (k.to_owned(), storage.get(&format!("{PUBLIC_PREFIX}{k}")).cloned().unwrap_or(Value::Null))
                        })
                        .collect();
                    data.insert(client.to_owned(), Value::Object(values));
                }
                let mut reply = ctx.response(token);
                reply.insert("data".into(), Value::Object(data));
                ctx.reply(reply).await;
            }
        }
    }
}

#[async_trait]
impl Plugin for SystemPlugin {
    fn namespace(&self) -> &str {
        NS_SYSTEM
    }

    async fn process_token(&self, ctx: &mut RequestContext<'_>, token: &Token) {
        let Some(kind) = get_str(token, "type") else {
            return Self::fail(ctx, token, "missing 'type' argument").await;
        };
        match kind {
            "send" => Self::send(ctx, token).await,
            "respond" => Self::respond(ctx, token).await,
            "broadcast" => Self::broadcast(ctx, token).await,
            "broadcastToSharedSession" => Self::broadcast_to_shared_session(ctx, token).await,
            "header" => {} // accepted, no reply (pollgate negotiates no encodings)
            "login" | "logon" => Self::login(ctx, token).await,
            "logout" | "logoff" => Self::logout(ctx, token).await,
            "getAuthorities" => Self::get_authorities(ctx, token).await,
            "close" => Self::close(ctx, token).await,
            "getClients" => Self::get_clients(ctx, token).await,
            "ping" => {
                if get_bool(token, "echo") != Some(false) {
                    ctx.reply_ok(token).await;
                }
            }
            "echo" => Self::echo(ctx, token).await,
            "wait" => Self::wait(ctx, token).await,
            "alloc" | "dealloc" => {
                Self::fail(ctx, token, &format!("'{kind}' is not supported by this server")).await;
            }
            "sessionPut" | "sessionGet" | "sessionHas" | "sessionRemove" | "sessionKeys" | "sessionGetAll"
            | "sessionGetMany" => Self::session_token(ctx, kind, token).await,
            "getjvminfo" => {
                let Some(session) = ctx.session().await else { return };
                let msg = if has_right(&session, &RIGHT_JVMINFO) {
                    "getjvminfo is not available: pollgate does not run on a JVM"
                } else {
                    "access denied"
                };
                Self::fail(ctx, token, msg).await;
            }
            other => Self::fail(ctx, token, &format!("unknown type '{other}'")).await,
        }
    }

    /// A store failure stops it before the `connect` event and fails the open (see
    /// [`Engine::open`]): a session read as empty would have its user renamed `anonymous`.
    async fn connector_started(&self, ctx: &mut RequestContext<'_>) {
        let engine = ctx.engine.clone();
        if Self::start_session(ctx).await.is_none() {
            return;
        }
        if engine.config.broadcast_open_event {
            let Some(count) = Self::client_count(&engine).await else { return };
            let mut event = protocol::event("connect");
            event.insert("sourceId".into(), ctx.connector_id.into());
            event.insert("clientCount".into(), count.into());
            engine.broadcast_event(Some(ctx.connector_id), "connect", &event).await;
        }
    }

    async fn connector_stopped(&self, ctx: &mut RequestContext<'_>, _reason: CloseReason) {
        let engine = ctx.engine;
        if engine.config.broadcast_close_event {
            let Some(count) = Self::client_count(engine).await else { return };
            let mut event = protocol::event("disconnect");
            event.insert("sourceId".into(), ctx.connector_id.into());
            event.insert("clientCount".into(), count.into());
            engine.broadcast_event(Some(ctx.connector_id), "disconnect", &event).await;
        }
    }
}
