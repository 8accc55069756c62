//! The admin API under `{context}/admin/`: sessions and connectors as JSON, for operators.
//!
//! | request | answer |
//! |---|---|
//! | `GET sessions?user=&active=&opened_after=&opened_before=&request_after=&request_before=&skip=&take=` | `{total, skip, take, sessions: [record]}`, newest first |
//! | `GET sessions/{id}` | the record, or 404 |
//! | `PUT sessions/{id}/data` with a JSON object | stores each entry in the session; the record |
//! | `POST sessions/{id}/close` | closes its connectors (each gets `http.command.close`): `{closed}` |
//! | `DELETE sessions/{id}` | closes its connectors and forgets the session and its record: 204 |
//! | `GET connectors?skip=&take=` | `{total, skip, take, connectors: [{id, session_id, address, client, open_time, last_activity, queue_depth}]}` |
//! | `POST connectors/{id}/close` | `{closed: true}`, or 404 |
//!
//! Times are milliseconds since the epoch. A request is allowed with `Authorization: Bearer
//! {admin_token}`, or from a logged-in connector (`X-Pollgate-Connection`) whose user holds
//! `admin_right`; otherwise 401 (no or wrong credentials) or 403 (a user without the right),
//! with the same body whatever the reason.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::body::{text_response, Body, BodyError, ReadBody};
use crate::auth;
use crate::engine::Engine;
use crate::params::Params;
use crate::store::{CloseReason, SessionRecord, StoreError};

const DEFAULT_TAKE: usize = 50;
const MAX_TAKE: usize = 1000;

/// Who asks: the bearer token sent, if any, and the connector id of the caller's connection.
pub struct Caller {
    pub bearer: Option<String>,
    pub connector_id: Option<String>,
}

enum AdminError {
    Unauthorized,
    Forbidden,
    NotFound(&'static str),
    BadRequest(String),
    /// The methods the resource takes, for `Allow`.
    MethodNotAllowed(&'static str),
    Conflict(&'static str),
    /// The body did not arrive within `body_read_timeout`.
    BodyTimeout,
    Store(StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

type AdminResult = Result<Response<Body>, AdminError>;

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = text_response(status, value.to_string());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl AdminError {
    fn into_response(self) -> Response<Body> {
        let allow = match self {
            AdminError::MethodNotAllowed(methods) => Some(methods),
            _ => None,
        };
        let (status, message) = match self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            AdminError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            AdminError::NotFound(what) => (StatusCode::NOT_FOUND, what.to_owned()),
            AdminError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            AdminError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".to_owned()),
            AdminError::Conflict(why) => (StatusCode::CONFLICT, why.to_owned()),
            AdminError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "the body was not received in time".to_owned()),
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin: store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "the store cannot be reached".to_owned())
            }
        };
        let mut resp = json_response(status, &json!({ "error": message }));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(methods) = allow {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
        }
        resp
    }
}

/// Serves one admin request; `path` is what follows `{context}/admin/`.
pub async fn serve(engine: &Arc<Engine>, req: Request<ReadBody>, path: &str, caller: Caller) -> Response<Body> {
    let result = match authorize(engine, &caller).await {
        Ok(()) => route(engine, req, path).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(AdminError::into_response)
}

/// Equal, in a time that does not depend on where they differ (nor on their lengths).
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Md5::digest(a.as_bytes()), Md5::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

async fn authorize(engine: &Arc<Engine>, caller: &Caller) -> Result<(), AdminError> {
    let config = &engine.config;
    if let Some(token) = &caller.bearer {
        return match !config.admin_token.is_empty() && same_secret(token, &config.admin_token) {
            true => Ok(()),
            false => Err(AdminError::Unauthorized),
        };
    }
    let Some(id) = &caller.connector_id else { return Err(AdminError::Unauthorized) };
    let now = crate::protocol::now_ms();
    let Some(session_id) = engine.store.touch(id, now).await? else { return Err(AdminError::Unauthorized) };
    let session = engine.store.session_storage(&session_id).await?;
    if !auth::is_authenticated(&session) {
        return Err(AdminError::Unauthorized);
    }
    match auth::authorities(&session).contains(&config.admin_right.as_str()) {
        true => Ok(()),
        false => Err(AdminError::Forbidden),
    }
}

async fn route(engine: &Arc<Engine>, req: Request<ReadBody>, path: &str) -> AdminResult {
    let params = Params::parse(req.uri().query().unwrap_or("").as_bytes());
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        // A HEAD is answered as its GET, without the body (reading changes nothing).
        (["sessions"], Method::GET | Method::HEAD) => list_sessions(engine, &params).await,
        (["sessions", id], Method::GET | Method::HEAD) => {
            Ok(json_response(StatusCode::OK, &record_json(&session(engine, id).await?)))
        }
        (["sessions", id], Method::DELETE) => delete_session(engine, id).await,
        (["sessions", id, "close"], Method::POST) => {
            let closed = close_session(engine, &session(engine, id).await?).await?;
            Ok(json_response(StatusCode::OK, &json!({ "closed": closed })))
        }
        (["sessions", id, "data"], Method::PUT) => put_data(engine, id, req).await,
        (["connectors"], Method::GET | Method::HEAD) => list_connectors(engine, &params).await,
        (["connectors", id, "close"], Method::POST) => match engine.try_close(id, CloseReason::Admin, true).await? {
            true => Ok(json_response(StatusCode::OK, &json!({ "closed": true }))),
            false => Err(AdminError::NotFound("no such connector")),
        },
        (["sessions"] | ["connectors"], _) => Err(AdminError::MethodNotAllowed("GET, HEAD")),
        (["sessions", _], _) => Err(AdminError::MethodNotAllowed("GET, HEAD, DELETE")),
        (["sessions", _, "close"] | ["connectors", _, "close"], _) => Err(AdminError::MethodNotAllowed("POST")),
        (["sessions", _, "data"], _) => Err(AdminError::MethodNotAllowed("PUT")),
        _ => Err(AdminError::NotFound("no such admin resource")),
    }
}

async fn session(engine: &Engine, id: &str) -> Result<SessionRecord, AdminError> {
    let records = engine.store.session_records().await?;
    records.into_iter().find(|r| r.id == id).ok_or(AdminError::NotFound("no such session"))
}

/// A record as JSON; the session's own entries (`$username`, `$authorities` …) are shown as
/// fields, not as data.
fn record_json(r: &SessionRecord) -> Value {
    let data: serde_json::Map<String, Value> =
        r.data.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({
        "id": r.id,
        "user_id": r.user_name,
        "user_name": r.user_name,
        "active": r.active,
        "open_time": r.open_ms,
        "request_time": r.request_ms,
        "close_time": r.close_ms,
        "address": r.address,
        "client": r.client,
        "connectors": r.connectors,
        "data": data,
    })
}

fn number(params: &Params, name: &str) -> Result<Option<i64>, AdminError> {
    match params.non_empty(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| AdminError::BadRequest(format!("'{name}' must be a number"))),
    }
}

/// `skip` and `take` (at most [`MAX_TAKE`]).
fn paging(params: &Params) -> Result<(usize, usize), AdminError> {
    let skip = number(params, "skip")?.unwrap_or(0);
    let take = number(params, "take")?.unwrap_or(DEFAULT_TAKE as i64);
    if skip < 0 || !(0..=MAX_TAKE as i64).contains(&take) {
        return Err(AdminError::BadRequest(format!("'skip' must be ≥ 0 and 'take' within 0..={MAX_TAKE}")));
    }
    Ok((skip as usize, take as usize))
}

async fn list_sessions(engine: &Engine, params: &Params) -> AdminResult {
    let (skip, take) = paging(params)?;
    let active = match params.non_empty("active") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(AdminError::BadRequest("'active' must be true or false".into())),
    };
    let user = params.non_empty("user");
    let range = |name: &str| number(params, name);
    let (opened_after, opened_before) = (range("opened_after")?, range("opened_before")?);
    let (request_after, request_before) = (range("request_after")?, range("request_before")?);
    let mut records: Vec<SessionRecord> = engine
        .store
        .session_records()
        .await?
        .into_iter()
        .filter(|r| user.is_none_or(|u| r.user_name.as_deref() == Some(u)))
        .filter(|r| active.is_none_or(|a| r.active == a))
        .filter(|r| opened_after.is_none_or(|t| r.open_ms >= t) && opened_before.is_none_or(|t| r.open_ms < t))
        .filter(|r| request_after.is_none_or(|t| r.request_ms >= t) && request_before.is_none_or(|t| r.request_ms < t))
        .collect();
    records.sort_by(|a, b| b.open_ms.cmp(&a.open_ms).then_with(|| a.id.cmp(&b.id)));
    let page: Vec<Value> = records.iter().skip(skip).take(take).map(record_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "total": records.len(), "skip": skip, "take": take, "sessions": page })))
}

/// Closes every live connector of a session; how many were closed. A store failure stops
/// it (503), rather than report the rest as already closed.
async fn close_session(engine: &Arc<Engine>, record: &SessionRecord) -> Result<usize, StoreError> {
    let mut closed = 0;
    for id in &record.connectors {
        if engine.try_close(id, CloseReason::Admin, true).await? {
            closed += 1;
        }
    }
    Ok(closed)
}

async fn delete_session(engine: &Arc<Engine>, id: &str) -> AdminResult {
    let record = session(engine, id).await?;
    close_session(engine, &record).await?;
    engine.store.forget_session(id).await?;
    Ok(text_response(StatusCode::NO_CONTENT, ""))
}

async fn put_data(engine: &Engine, id: &str, req: Request<ReadBody>) -> AdminResult {
    let limit = engine.config.maxframesize;
    // The connection read the body within `body_read_timeout`, at most `maxframesize` bytes.
    let body = req.into_body().map_err(|e| match e {
        BodyError::TimedOut => AdminError::BodyTimeout,
        BodyError::TooLarge(_) => {
            AdminError::BadRequest(format!("the body must be a JSON object of at most {limit} bytes"))
        }
    })?;
    let Ok(Value::Object(entries)) = serde_json::from_slice::<Value>(&body) else {
        return Err(AdminError::BadRequest("the body must be a JSON object".into()));
    };
    if entries.keys().any(|k| k.starts_with('$')) {
        return Err(AdminError::BadRequest("keys starting with '$' belong to the server".into()));
    }
    if !session(engine, id).await?.active {
        return Err(AdminError::Conflict("the session is closed"));
    }
    for (key, value) in entries {
        engine.store.session_put(id, &key, value).await?;
    }
    Ok(json_response(StatusCode::OK, &record_json(&session(engine, id).await?)))
}

async fn list_connectors(engine: &Engine, params: &Params) -> AdminResult {
    let (skip, take) = paging(params)?;
    let mut connectors = engine.store.connectors().await?;
    connectors.sort_by(|a, b| b.opened_ms.cmp(&a.opened_ms).then_with(|| a.id.cmp(&b.id)));
    let page: Vec<_> = connectors.iter().skip(skip).take(take).collect();
    let ids: Vec<String> = page.iter().map(|c| c.id.clone()).collect();
    let depths = engine.store.queue_depths(&ids).await?;
    let rows: Vec<Value> = page
        .iter()
        .zip(depths)
        .map(|(c, depth)| {
            json!({
                "id": c.id,
                "session_id": c.session_id,
                "address": c.address,
                "client": c.user_agent,
                "open_time": c.opened_ms,
                "last_activity": c.last_active_ms,
                "queue_depth": depth,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total": connectors.len(), "skip": skip, "take": take, "connectors": rows }),
    ))
}
