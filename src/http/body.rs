//! Response and request bodies: the body type of every answer, plain-text answers, and a
//! request's body as the connection read it. A leaf: it imports nothing of pollgate.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The body type of every response.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A request's body, read whole by the connection before the request is handled.
pub type ReadBody = Result<Bytes, BodyError>;

/// Why a request has no body to hand on; the connection closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not received within `body_read_timeout`.
    TimedOut,
    /// Larger than this many bytes (`maxframesize`): refused unread.
    TooLarge(usize),
}

/// A plain-text response (every non-download answer of the endpoint).
pub fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}
