//! One HTTP request: routing (endpoint, admin API, static files), parameters, the dispatch
//! order of docs/PROTOCOL.md ("How a request is handled"). Below it, as leaves: bodies
//! ([`body`]), the one place where errors become status codes and bodies ([`error`]), what a
//! request is read with ([`request`]) and CORS (`cors`).

mod admin;
pub mod body;
mod cors;
pub mod error;
pub mod request;
mod static_files;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use body::{text_response, Body, ReadBody};
use cors::{glob_match, preflight, with_cors};
use error::HttpError;
use request::{Identity, Peer, PlainRequest, HEADER_CLOSE_REASON, HEADER_CONNECTION, HEADER_SEQ, X_FORWARDED_FOR};
use static_files::StaticFiles;

use crate::auth;
use crate::engine::{Engine, EngineError, OpenRequest};
use crate::params::Params;
use crate::plugins::RequestContext;
use crate::protocol::{self, Token, NS_SYSTEM};
use crate::shared_poll::{self, Carried, ShareError};
use crate::store;
use crate::timer::ConnTimer;

/// A request as the service takes it.
enum Inbound {
    /// Any method and path: its target escaped for routing, its body read.
    Full(Request<ReadBody>),
    /// A GET or POST of the endpoint, as it came.
    Plain(PlainRequest),
}

impl Inbound {
    fn method(&self) -> &Method {
        match self {
            Inbound::Full(req) => req.method(),
            Inbound::Plain(req) if req.post => &Method::POST,
            Inbound::Plain(_) => &Method::GET,
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Inbound::Full(req) => req.headers(),
            Inbound::Plain(req) => &req.headers,
        }
    }

    fn query(&self) -> &[u8] {
        match self {
            Inbound::Full(req) => req.uri().query().unwrap_or("").as_bytes(),
            Inbound::Plain(req) => &req.query,
        }
    }

    fn into_headers_and_body(self) -> (HeaderMap, ReadBody) {
        match self {
            Inbound::Full(req) => {
                let (parts, body) = req.into_parts();
                (parts.headers, body)
            }
            Inbound::Plain(req) => (req.headers, req.body),
        }
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidState => HttpError::InvalidState { post: false },
            EngineError::TooManyConnections => HttpError::TooManyConnections,
            EngineError::AckAhead(last) => HttpError::AckAhead(last),
            EngineError::SendInProgress => HttpError::SendInProgress,
            EngineError::SendForgotten => HttpError::SendForgotten,
            EngineError::Store(e) => HttpError::Unavailable(e.0),
        }
    }
}

/// What [`Service::read_request`] takes from an endpoint request.
struct EndpointRequest {
    /// The connector id (`sourceId`), derived from the connection id and the address
    /// (shared with the connection's [`Identity`], as is the address: no copy per request).
    id: Arc<str>,
    params: Params,
    /// A POST body that is not a form (a raw token for `send`).
    raw_body: Option<String>,
    address: Arc<str>,
    /// The `User-Agent` of an `open` (empty for other actions).
    user_agent: String,
    post: bool,
    /// A `share` parameter came in the query string (refused: it holds connection ids).
    share_in_query: bool,
}

impl EndpointRequest {
    /// The connector id; everything else is dropped here.
    fn into_id(self) -> Arc<str> {
        self.id
    }
}

/// What the metrics and the access log tell of a request, filled in as it is learned.
struct Access {
    /// Set for endpoint requests: the action, `` until it is known, `other` if unknown.
    action: Option<&'static str>,
    /// The access log's line, when the log wants it. Boxed: a held poll's state keeps it, and
    /// most servers log no line (128 bytes less per connection with a request in flight).
    line: Option<Box<AccessLine>>,
}

/// What only the access log needs, copied only when it wants the line.
struct AccessLine {
    method: Method,
    path: String,
    source_id: String,
    address: String,
}

/// The action as a static word for the access log; anything else (a client's free text)
/// is logged as `other`.
fn known_action(action: Option<&str>) -> Option<&'static str> {
    let action = action?;
    Some(crate::metrics::ACTIONS.iter().find(|a| **a == action).copied().unwrap_or("other"))
}

enum Read {
    Request(EndpointRequest),
    /// Answered without an action (a CORS preflight).
    Answered(Response<Body>),
}

/// What routing leaves to do: nothing but answer, or hold a poll.
enum Routed {
    Answered(Response<Body>),
    Poll(HeldPoll),
    /// A shared poll (boxed: most polls are plain, and this keeps their state small).
    Shared(Box<SharedPoll>),
}

/// A shared poll to hold ([`crate::shared_poll`]).
struct SharedPoll {
    carried: Vec<Carried>,
    wait: u64,
    origin: Option<HeaderValue>,
}

/// A `sync` to hold: all it keeps while it waits (every idle client holds one).
struct HeldPoll {
    id: Arc<str>,
    ack: Option<u64>,
    wait: u64,
    /// The request's `Origin`, when allowed: the answer carries the CORS headers.
    origin: Option<HeaderValue>,
}

/// Everything a request needs besides itself, shared by all connections.
pub struct Service {
    pub engine: Arc<Engine>,
    statics: StaticFiles,
    /// `{context}/http`.
    endpoint: String,
    /// `{context}/metrics`.
    metrics_path: String,
    /// `{context}/admin/`.
    admin_prefix: String,
    /// `trusted_proxies`, parsed once (the config validated them).
    trusted_proxies: Vec<IpAddr>,
}

impl Service {
    pub fn new(engine: Arc<Engine>) -> Service {
        let context = engine.config.context.trim_end_matches('/');
        let (endpoint, metrics_path) = (format!("{context}/http"), format!("{context}/metrics"));
        let admin_prefix = format!("{context}/admin/");
        let statics = StaticFiles::new(&engine.config.document_root);
        let trusted_proxies = engine.config.trusted_proxies.iter().filter_map(|t| t.parse().ok()).collect();
        Service { engine, statics, endpoint, metrics_path, admin_prefix, trusted_proxies }
    }

    /// Serves one request. A panic anywhere in routing, the engine or a plugin answers 500
    /// (see [`crate::panics`] for what it leaves behind) and leaves the server serving.
    ///
    /// The connection keeps one such future while it waits for the answer, sized for the
    /// largest state: so
    /// routing runs in a block of its own, freed before a poll is held, and the request is
    /// boxed until then (routing takes the box: moved out of in `serve`, its block would stay
    /// allocated, empty, until the response). An idle connection or a held poll then costs
    /// the poll's state, not that of every action (1.7 KB against ~0.9 KB).
    pub fn handle(
        self: Arc<Self>,
        req: Request<ReadBody>,
        peer: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        let req = Box::new(Inbound::Full(req));
        self.serve(req, peer)
    }

    /// [`Service::handle`] for an endpoint GET or POST as it came.
    pub fn handle_plain(
        self: Arc<Self>,
        req: PlainRequest,
        peer: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        let req = Box::new(Inbound::Plain(req));
        self.serve(req, peer)
    }

    /// How the access log names a request's path: a route's own path, the admin API's
    /// prefix (its paths hold session ids), a file that was served; anything else (a
    /// client's free text, which may hold a connection id) is a placeholder.
    fn logged_path(&self, path: &str, status: StatusCode) -> String {
        if path == self.endpoint || path == self.metrics_path || path == "/healthz" || path == "/readyz" {
            return path.to_owned();
        }
        if path.starts_with(self.admin_prefix.as_str()) {
            return format!("{}...", self.admin_prefix);
        }
        match status.is_success() || status.is_redirection() {
            true => path.to_owned(),
            false => "-".to_owned(),
        }
    }

    async fn serve(self: Arc<Self>, req: Box<Inbound>, peer: Arc<Peer>) -> Response<Body> {
        let start = Instant::now();
        // Off, or filtered out by `log_level`: not even the copies the line would need.
        let log = self.engine.config.access_log && tracing::enabled!(target: "pollgate::access", tracing::Level::INFO);
        let line = log.then(|| {
            let path = match &*req {
                Inbound::Full(req) => req.uri().path().to_owned(),
                Inbound::Plain(_) => self.endpoint.clone(),
            };
            Box::new(AccessLine {
                method: req.method().clone(),
                path,
                source_id: String::new(),
                address: String::new(),
            })
        });
        let mut access = Access { action: None, line };
        // Caught here, inside the access log and the metrics, so a panic is counted and
        // logged as the 500 it answers.
        let routed = crate::panics::guard(|| self.route_quietly(req, &peer, &mut access)).await;
        let resp = match routed {
            Ok(Routed::Answered(resp)) => resp,
            Ok(Routed::Poll(poll)) => match crate::panics::guard(|| self.hold(&poll, &peer.timer)).await {
                Ok(answer) => with_cors(answer.unwrap_or_else(HttpError::into_response), poll.origin),
                Err(panicked) => self.panicked(panicked),
            },
            Ok(Routed::Shared(poll)) => {
                let held = crate::panics::guard(|| Box::pin(self.hold_shared(&poll, &peer.timer))).await;
                match held {
                    Ok(answer) => with_cors(answer.unwrap_or_else(HttpError::into_response), poll.origin.clone()),
                    Err(panicked) => self.panicked(panicked),
                }
            }
            Err(panicked) => self.panicked(panicked),
        };
        if let Some(action) = access.action {
            self.engine.metrics.request(action, resp.status().as_u16(), start.elapsed().as_secs_f64());
        }
        let Some(line) = access.line else { return resp };
        // Never the connection id, a password or a token: the connector id is public (it is
        // the `sourceId` other clients see), the action is one word, the path a known one.
        tracing::info!(
            target: "pollgate::access",
            method = %line.method,
            path = %self.logged_path(&line.path, resp.status()),
            action = access.action.unwrap_or(""),
            status = resp.status().as_u16(),
            latency_us = start.elapsed().as_micros() as u64,
            source_id = line.source_id.as_str(),
            address = line.address.as_str(),
        );
        resp
    }

    fn panicked(&self, panicked: crate::panics::Panicked) -> Response<Body> {
        self.engine.metrics.panics.inc();
        HttpError::Panicked(panicked.location).into_response()
    }

    /// Routes a request; `access` learns what the metrics and the access log tell of it.
    async fn route_quietly(&self, req: Box<Inbound>, peer: &Peer, access: &mut Access) -> Routed {
        let req = match *req {
            Inbound::Full(req) if req.uri().path() != self.endpoint => {
                return Routed::Answered(self.route_other(req, peer).await);
            }
            endpoint => endpoint,
        };
        access.action = Some("");
        // Checked here once for the whole request: the answer carries the CORS headers of an
        // allowed origin, and a request from any other is refused.
        let origin = match req.headers().get(header::ORIGIN) {
            Some(origin) if !self.origin_allowed(origin) => {
                return Routed::Answered(HttpError::OriginNotAllowed.into_response());
            }
            origin => origin.cloned(),
        };
        match self.endpoint_request(req, peer, access).await {
            Ok(Routed::Poll(poll)) => Routed::Poll(HeldPoll { origin, ..poll }),
            Ok(Routed::Shared(mut poll)) => {
                poll.origin = origin;
                Routed::Shared(poll)
            }
            Ok(Routed::Answered(resp)) => Routed::Answered(with_cors(resp, origin)),
            Err(e) => Routed::Answered(with_cors(e.into_response(), origin)),
        }
    }

    /// Everything but the endpoint: health, readiness, the admin API, metrics, static files.
    async fn route_other(&self, req: Request<ReadBody>, peer: &Peer) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" {
            return text_response(StatusCode::OK, "ok");
        }
        if path == "/readyz" {
            return self.readiness().await;
        }
        if let Some(rest) = path.strip_prefix(self.admin_prefix.as_str()) {
            let rest = rest.to_owned();
            let caller = self.admin_caller(&req, peer.addr);
            return Box::pin(admin::serve(&self.engine, req, &rest, caller)).await;
        }
        if path == self.metrics_path {
            let store = &self.engine.store;
            let (connectors, sessions) = (store.connector_count().await.ok(), store.session_count().await.ok());
            let text = self.engine.metrics.render(connectors, sessions);
            let mut resp = text_response(StatusCode::OK, text);
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            return resp;
        }
        let context = self.engine.config.context.as_str();
        let path = req.uri().path().to_owned();
        let (mount, rest) = match path.strip_prefix(context) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => (context, rest.to_owned()),
            _ => ("", path.clone()),
        };
        // Boxed, like the admin API's: the routing future, allocated for every request, stays
        // sized for the endpoint's actions rather than for a file's.
        Box::pin(self.statics.serve(&req, mount, if rest.is_empty() { "/" } else { &rest })).await
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        self.engine.config.domains.iter().any(|pattern| glob_match(pattern, origin))
    }

    /// Who calls the admin API: a bearer token, or the connector of `X-Pollgate-Connection`.
    fn admin_caller(&self, req: &Request<ReadBody>, peer: SocketAddr) -> admin::Caller {
        let headers = req.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let connector_id = headers.get(&HEADER_CONNECTION).filter(|v| !v.is_empty()).map(|v| {
            let address = self.client_address(peer, headers);
            let ip_part = if self.engine.config.bind_connection_to_ip { address.as_str() } else { "" };
            protocol::connector_id(&String::from_utf8_lossy(v.as_bytes()), ip_part)
        });
        admin::Caller { bearer, connector_id }
    }

    /// `/readyz`: 200 while the store answers and the node is not shutting down.
    async fn readiness(&self) -> Response<Body> {
        if self.engine.draining.is_cancelled() {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Not ready: shutting down!");
        }
        match self.engine.store.ping().await {
            Ok(()) => text_response(StatusCode::OK, "ready"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: the store cannot be reached");
                text_response(StatusCode::SERVICE_UNAVAILABLE, "Not ready: the store cannot be reached!")
            }
        }
    }

    async fn endpoint_request(&self, req: Inbound, peer: &Peer, access: &mut Access) -> Result<Routed, HttpError> {
        let request = match self.read_request(req, peer).await? {
            Read::Request(request) => request,
            Read::Answered(resp) => return Ok(Routed::Answered(resp)),
        };
        access.action = known_action(request.params.get("action"));
        if let Some(line) = access.line.as_mut() {
            line.address = request.address.to_string();
            line.source_id = request.id.to_string();
        }
        if request.params.get("action") == Some("sync") {
            if request.params.get("share").is_some() {
                return self.shared_poll(&request).map(|poll| Routed::Shared(Box::new(poll)));
            }
            let ack = parse_param(&request.params, "ack")?;
            let wait = parse_param(&request.params, "wait")?.unwrap_or(0);
            // A held poll keeps only the connector id: the parameters and the rest go now,
            // since every idle client holds one (a partial move would keep them).
            return Ok(Routed::Poll(HeldPoll { id: request.into_id(), ack, wait, origin: None }));
        }
        Ok(Routed::Answered(self.connector_action(request).await?))
    }

    /// The request's method, parameters (query and form body), connection id and client
    /// address; a preflight is answered here.
    async fn read_request(&self, req: Inbound, peer: &Peer) -> Result<Read, HttpError> {
        let config = &self.engine.config;
        let post = match *req.method() {
            Method::GET => false,
            Method::POST => true,
            Method::OPTIONS => return Ok(Read::Answered(preflight(req.headers()))),
            // A HEAD would run the action (drain a queue, close a connector) and lose its
            // answer: refused, as every method but these three.
            _ => return Err(HttpError::MethodNotAllowed),
        };
        let query = req.query();
        if query.len() > config.maxframesize {
            return Err(HttpError::TooLarge(config.maxframesize));
        }
        let mut params = Params::parse(query);
        let share_in_query = params.get("share").is_some();
        let (headers, body) = req.into_headers_and_body();
        // A body not read whole refuses its request, whatever the method.
        let body = body?;
        let mut raw_body = None;
        if post {
            if body.len() > config.maxframesize {
                return Err(HttpError::TooLarge(config.maxframesize));
            }
            const FORM: &[u8] = b"application/x-www-form-urlencoded";
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.as_bytes().get(..FORM.len()))
                .is_some_and(|kind| kind.eq_ignore_ascii_case(FORM));
            if form {
                params.extend(&body);
            } else if !body.is_empty() {
                raw_body = Some(crate::params::utf8_lossy(body.into()));
            }
        }
        let connection_id = headers
            .get(&HEADER_CONNECTION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .filter(|v| !v.is_empty())
            .or_else(|| params.non_empty("connectionId").map(Cow::Borrowed))
            .ok_or(HttpError::MissingConnectionId)?;
        let (address, id) = self.identify(peer, &connection_id, &headers);
        // Kept for open only (the connector records it); other actions need no copy.
        let user_agent = match params.get("action") {
            Some("open") => headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
            _ => String::new(),
        };
        Ok(Read::Request(EndpointRequest { id, params, raw_body, address, user_agent, post, share_in_query }))
    }

    /// Every action but sync: those that need a live connector, and open.
    async fn connector_action(&self, request: EndpointRequest) -> Result<Response<Body>, HttpError> {
        let EndpointRequest { id, params, raw_body, address, user_agent, post, .. } = request;
        let engine = &self.engine;
        let config = &engine.config;
        let action = params.get("action").unwrap_or("");
        if action == "open" {
            // A live connector of this id makes the store refuse (InvalidState).
            let request = OpenRequest {
                connector_id: &id,
                session: params.non_empty("sessionId"),
                address: &address,
                user_agent: &user_agent,
            };
            Box::pin(engine.open(request)).await?;
            return Ok(text_response(StatusCode::OK, protocol::max_frame_size_message(config.maxframesize)));
        }
        if action == "send" {
            let data = params.get("data").map(str::to_owned).or(raw_body).unwrap_or_default();
            let valid = !data.is_empty() && data.len() <= config.maxframesize;
            if let (true, Ok(seq)) = (valid, parse_param(&params, "seq")) {
                let body = engine.send_request(&id, &data, seq).await?.ok_or(HttpError::InvalidState { post })?;
                return Ok(text_response(StatusCode::OK, body.unwrap_or_default()));
            }
            // A request that is refused: for an unknown connector, as any action is.
            engine.touch(&id).await?.ok_or(HttpError::InvalidState { post })?;
            if data.is_empty() {
                return Err(HttpError::InvalidParameters);
            }
            if data.len() > config.maxframesize {
                return Err(HttpError::TooLarge(config.maxframesize));
            }
            return Err(parse_param(&params, "seq").err().unwrap_or(HttpError::InvalidParameters));
        }
        // One store step finds the live connector and records the request.
        let Some(session_id) = engine.touch(&id).await? else { return Err(HttpError::InvalidState { post }) };
        let session_id = session_id.as_str();
        match action {
            "login" => {
                let (Some(username), Some(password)) = (params.non_empty("username"), params.non_empty("password"))
                else {
                    return Err(HttpError::InvalidParameters);
                };
                let mut token = system_token("login", &params);
                token.insert("username".into(), username.into());
                token.insert("password".into(), password.into());
                let body = engine.process_token(&id, session_id, &token, None).await?;
                Ok(text_response(StatusCode::OK, body.unwrap_or_default()))
            }
            "logout" => {
                let token = system_token("logout", &params);
                let body = engine.process_token(&id, session_id, &token, None).await?;
                Ok(text_response(StatusCode::OK, body.unwrap_or_default()))
            }
            "close" => {
                // Already closed by someone else is fine; a close the store did not make is 503.
                engine.try_close(&id, crate::store::CloseReason::Client, true).await?;
                Ok(text_response(StatusCode::OK, protocol::CLOSE_COMMAND))
            }
            "whoami" => {
                let storage = engine.store.session_storage(session_id).await?;
                let authenticated = auth::is_authenticated(&storage);
                let authorities = if authenticated { auth::authorities(&storage) } else { Vec::new() };
                let body = serde_json::json!({
                    "sourceId": &*id,
                    "username": if authenticated { protocol::get_str(&storage, "$username") } else { None },
                    "authorities": authorities,
                    "timeout": config.timeout_minutes(),
                });
                Ok(text_response(StatusCode::OK, body.to_string()))
            }
            "active" => Ok(text_response(StatusCode::NO_CONTENT, "")),
            other => match engine.action_plugin(other) {
                Some(plugin) => {
                    let mut ctx = RequestContext::new(engine, &id, session_id, true);
                    let resp = plugin.process_action(&mut ctx, other, &params).await;
                    // A store failure the plugin met through `ctx` fails the action (503),
                    // whatever it answered, as it fails a token.
                    ctx.take_store_error()?;
                    resp
                }
                None => Err(HttpError::InvalidRequest),
            },
        }
    }

    /// A `sync`: drains the queue, waiting up to `wait` ms for a packet if it is empty.
    async fn hold(&self, poll: &HeldPoll, timer: &ConnTimer) -> Result<Response<Body>, HttpError> {
        let engine = &self.engine;
        // A poll never outlives the session timeout it would otherwise keep alive.
        let cap = engine.config.session_timeout() / 2;
        let drained = engine.sync(&poll.id, poll.ack, Duration::from_millis(poll.wait).min(cap), timer).await?;
        let mut resp = text_response(StatusCode::OK, store::packets_text(&drained.packets));
        let headers = resp.headers_mut();
        headers.insert(HEADER_SEQ, HeaderValue::from(drained.seq));
        if let Some(reason) = drained.close_reason {
            if drained.packets.iter().any(|p| &*p.text == protocol::CLOSE_COMMAND) {
                headers.insert(HEADER_CLOSE_REASON, HeaderValue::from_static(reason.as_str()));
            }
        }
        Ok(resp)
    }

    /// A shared poll's parameters: each connection id of `share` names a connector of the
    /// request's client address, as the request's own connection id does; nothing is read
    /// from the store yet.
    fn shared_poll(&self, request: &EndpointRequest) -> Result<SharedPoll, HttpError> {
        let params = &request.params;
        let share = params.get("share").unwrap_or("");
        if request.share_in_query {
            return Err(HttpError::BadShare(ShareError::InQuery.text()));
        }
        if params.non_empty("ack").is_some() {
            return Err(HttpError::BadShare(ShareError::AckOutside.text()));
        }
        let wait = parse_param(params, "wait")?.unwrap_or(0);
        let ip_part = if self.engine.config.bind_connection_to_ip { &*request.address } else { "" };
        let carried = shared_poll::parse(share, |c| protocol::connector_id(c, ip_part)).map_err(|e| HttpError::BadShare(e.text()))?;
        Ok(SharedPoll { carried, wait, origin: None })
    }

    /// A shared poll: waits on all its connectors at once (see [`crate::shared_poll`]).
    async fn hold_shared(&self, poll: &SharedPoll, timer: &ConnTimer) -> Result<Response<Body>, HttpError> {
        let cap = self.engine.config.session_timeout() / 2;
        let wait = Duration::from_millis(poll.wait).min(cap);
        let found = shared_poll::hold(&self.engine, &poll.carried, wait, timer).await?;
        Ok(text_response(StatusCode::OK, shared_poll::answer_text(&found)))
    }

    /// The client address and connector id of a request with this connection id: those of
    /// the connection's last request when they must be the same, else derived and kept.
    fn identify(&self, peer: &Peer, connection_id: &str, headers: &HeaderMap) -> (Arc<str>, Arc<str>) {
        let mut last = peer.last.lock();
        // Behind a trusted proxy the address comes from a header, which may differ each time.
        let address = match self.trusted_proxies.contains(&peer.addr.ip().to_canonical()) {
            true => Some(self.client_address(peer.addr, headers)),
            false => None,
        };
        if let Some(known) = last.as_ref() {
            if known.connection_id == connection_id && address.as_ref().is_none_or(|a| **a == *known.address) {
                return (known.address.clone(), known.id.clone());
            }
        }
        let address = address.unwrap_or_else(|| self.client_address(peer.addr, headers));
        let ip_part = if self.engine.config.bind_connection_to_ip { address.as_str() } else { "" };
        let id: Arc<str> = protocol::connector_id(connection_id, ip_part).into();
        let address: Arc<str> = address.into();
        let connection_id = connection_id.to_owned();
        *last = Some(Identity { connection_id, address: address.clone(), id: id.clone() });
        (address, id)
    }

    /// The client's address: the peer, or, behind a trusted proxy, the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        let is_trusted = |ip: &IpAddr| self.trusted_proxies.contains(ip);
        let mut ip = peer.ip().to_canonical();
        if is_trusted(&ip) {
            let forwarded = headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok());
            let hops: Vec<IpAddr> =
                forwarded.flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse::<IpAddr>().ok()).collect();
            for hop in hops.iter().rev() {
                ip = hop.to_canonical();
                if !is_trusted(&ip) {
                    break;
                }
            }
        }
        ip.to_string()
    }
}

/// A system-plugin token built from HTTP parameters (`login`/`logout` actions); `utid`
/// defaults to 0 as in jWebSocket's REST API.
fn system_token(kind: &str, params: &Params) -> Token {
    let mut token = Token::new();
    token.insert("ns".into(), NS_SYSTEM.into());
    token.insert("type".into(), kind.into());
    let utid = params.get("utid").and_then(|u| u.parse::<i32>().ok()).unwrap_or(0);
    token.insert("utid".into(), utid.into());
    token
}

fn parse_param(params: &Params, name: &'static str) -> Result<Option<u64>, HttpError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| HttpError::BadParameter(name)),
    }
}

impl crate::conn::Handler for Service {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn limits(&self) -> crate::conn::Limits {
        let config = &self.engine.config;
        crate::conn::Limits {
            header_timeout: Duration::from_secs(config.header_read_timeout),
            body_timeout: Duration::from_secs(config.body_read_timeout),
            max_body: config.maxframesize,
        }
    }

    fn handle_plain(
        self: Arc<Self>,
        req: PlainRequest,
        peer: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        Service::handle_plain(self, req, peer)
    }

    fn handle(
        self: Arc<Self>,
        req: Request<ReadBody>,
        peer: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        Service::handle(self, req, peer)
    }
}
