//! pollgate's HTTP/1.1: one loop per connection that reads each request's head
//! ([`head`]), frames and reads its body (a length or [`chunked`]), hands the request to the
//! service and writes the answer ([`response`]), until the connection ends.
//!
//! Every byte of a connection is framed here, once: there is no second parser (a proxy
//! adapter, hyper's) that could read a request as ending elsewhere, and since a head is
//! parsed from all the bytes received so far, how the reads are cut never changes an answer.
//! The endpoint's plain GETs and POSTs, what a long-poll client sends all day, go to the
//! service as a [`PlainRequest`] with only the headers it reads; every other request goes as
//! an `http::Request` whose target is escaped for routing.
//!
//! Deadlines: a head must be complete within `header_read_timeout` of the last answer (or the
//! accept), one deadline per head however it trickles in; a body within `body_read_timeout`.
//! A client that goes away drops its request (a held poll ends at once); shutdown ends a
//! connection after the request in flight.

pub mod chunked;
pub mod head;
pub mod response;
pub mod write_deadline;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::body::{text_response, Body, BodyError, ReadBody};
use crate::http::request::{Peer, PlainRequest, ENDPOINT_HEADERS};
use crate::timer::Lent;
use head::{Framing, Head, Parsed, MAX_HEAD};
use response::Manner;

/// What serves the requests a connection reads: the service ([`crate::http::Service`]), or a
/// fuzz target's recorder.
pub trait Handler: Send + Sync + 'static {
    /// `{context}/http`: its GETs and POSTs are read as [`PlainRequest`]s.
    fn endpoint(&self) -> &str;
    /// The deadlines and the body limit.
    fn limits(&self) -> Limits;
    /// Answers a GET or POST of the endpoint.
    fn handle_plain(self: Arc<Self>, req: PlainRequest, peer: Arc<Peer>)
        -> impl Future<Output = Response<Body>> + Send;
    /// Answers any other request.
    fn handle(self: Arc<Self>, req: Request<ReadBody>, peer: Arc<Peer>) -> impl Future<Output = Response<Body>> + Send;
}

/// A connection's deadlines and body limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `header_read_timeout`: a head, from the last answer (or the accept) to its empty line.
    pub header_timeout: Duration,
    /// `body_read_timeout`: a whole body, from the end of its head.
    pub body_timeout: Duration,
    /// `maxframesize`: the largest body read; a larger one is refused unread (413).
    pub max_body: usize,
}

/// What a read asks for at least: a whole head, as clients send it, in one read.
const READ_SIZE: usize = 4096;
/// What a read of a body asks for at most.
const BODY_READ_SIZE: usize = 64 * 1024;

/// Serves a connection's requests until it ends: closed by the client, a deadline, a refused
/// request, `Connection: close`, or shutdown.
pub async fn serve<S, H>(mut io: S, peer: &Arc<Peer>, handler: &Arc<H>, stop: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let limits = handler.limits();
    // Made once: each `cancelled()` joins the token's waiters anew.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // What the client sent and no request has taken yet (a pipelined request's bytes, say).
    // Emptied and freed between requests, so a held poll does not keep a read buffer.
    let mut buf = BytesMut::new();
    loop {
        // The next head, within `header_read_timeout`, however slowly it trickles in;
        // shutdown ends the wait.
        let head = {
            let deadline = peer.timer.sleep_until(Instant::now() + limits.header_timeout);
            tokio::pin!(deadline);
            // Where to look for the head's end in bytes that came since the last look: a head
            // is parsed again only once it may be whole, so a trickled one costs no more than
            // one that came at once.
            let mut looked: usize = 0;
            // Whether the request line has ended: one longer than any target is refused.
            let mut line_ended = false;
            loop {
                // Empty lines before a request line are skipped (RFC 9112 2.2).
                let blank = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                buf.advance(blank);
                looked = looked.saturating_sub(blank);
                if may_be_whole(&buf, looked) {
                    match head::parse(&buf) {
                        Parsed::Complete(head) => break head,
                        Parsed::Refused(status) => return refuse(&mut io, status).await,
                        Parsed::Partial => {}
                    }
                }
                if buf.len() > MAX_HEAD {
                    return refuse(&mut io, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
                }
                line_ended |= memchr::memchr(b'\n', &buf[looked..]).is_some();
                if !line_ended && buf.len() > head::MAX_TARGET + 64 {
                    return refuse(&mut io, StatusCode::URI_TOO_LONG).await;
                }
                looked = buf.len();
                if buf.capacity() - buf.len() < READ_SIZE / 4 {
                    buf.reserve(READ_SIZE);
                }
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = &mut deadline => return,
                    _ = &mut stopped => return,
                }
            }
        };

        // The request without its body, taken from the head's bytes before they go.
        let target = &buf[head.target.clone()];
        let path = target.split(|b| *b == b'?').next().unwrap_or_default();
        let plain = matches!(head.method, Method::GET | Method::POST) && path == handler.endpoint().as_bytes();
        let request = match plain {
            true => Pending::Plain(plain_request(&buf, &head)),
            false => match full_request(&buf, &head) {
                Ok(request) => Pending::Full(request),
                Err(status) => return refuse(&mut io, status).await,
            },
        };
        let head_only = head.method == Method::HEAD;
        let Head { len, framing, mut close, expect_continue, http10, .. } = head;
        buf.advance(len);

        // The body, within `body_read_timeout`. One that is too large, late or malformed
        // closes the connection after its answer: where it ends is not known.
        let wants_continue = expect_continue && !http10 && !body_is_here(&buf, framing, limits.max_body);
        if wants_continue && io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
            return;
        }
        let body = match read_body(&mut io, &mut buf, framing, peer, limits).await {
            Ok(body) => body,
            Err(Ended::Malformed) => return refuse(&mut io, StatusCode::BAD_REQUEST).await,
            Err(Ended::Closed) => return,
        };
        close |= body.is_err();
        if buf.is_empty() {
            buf = BytesMut::new();
        }

        // The answer. Meanwhile the connection is watched: a client that goes away drops its
        // request (a held poll ends at once); a pipelined request waits in `buf`.
        let answer = async {
            match request {
                Pending::Plain(PlainHead { post, query, headers }) => {
                    let request = PlainRequest { post, query, headers, body };
                    handler.clone().handle_plain(request, peer.clone()).await
                }
                Pending::Full(request) => handler.clone().handle(request.map(|()| body), peer.clone()).await,
            }
        };
        let resp = {
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    biased;
                    resp = &mut answer => break resp,
                    read = io.read_buf(&mut buf), if buf.len() <= MAX_HEAD => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                }
            }
        };
        close |= stop.is_cancelled();
        let manner = Manner { close, head_only, http10 };
        if response::write(&mut io, resp, manner).await.is_err() {
            return;
        }
        if close {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// A request read but for its body.
enum Pending {
    Plain(PlainHead),
    Full(Request<()>),
}

/// A [`PlainRequest`] but for its body.
struct PlainHead {
    post: bool,
    query: Bytes,
    headers: HeaderMap,
}

/// Whether the head at the start of `buf` may have ended: its empty line is in the bytes
/// after `looked` (or straddles them).
fn may_be_whole(buf: &[u8], looked: usize) -> bool {
    let from = looked.saturating_sub(3);
    memchr::memchr_iter(b'\n', &buf[from..]).any(|at| matches!(&buf[from + at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// Answers a request refused before it reached the service (its head or body is malformed
/// or too large) with its status and no body, and closes the connection.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, status: StatusCode) {
    tracing::debug!(status = status.as_u16(), "request refused by the HTTP layer");
    let resp = text_response(status, Bytes::new());
    let manner = Manner { close: true, ..Manner::default() };
    if response::write(io, resp, manner).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// The endpoint request of `head`, waiting for its body: its query as it came and the
/// headers the endpoint reads.
fn plain_request(buf: &[u8], head: &Head) -> PlainHead {
    let target = &buf[head.target.clone()];
    let query = match memchr::memchr(b'?', target) {
        Some(at) => Bytes::copy_from_slice(&target[at + 1..]),
        None => Bytes::new(),
    };
    // httparse admits fewer bytes in a value than `HeaderValue` does: this never fails.
    // A copy, not a slice of `buf`: a held poll keeps the `Origin`, and a slice would keep
    // the whole read buffer with it.
    let mut headers = HeaderMap::new();
    if head.kept_all {
        for (which, at) in &head.kept[..head.kept_len] {
            if let Ok(value) = HeaderValue::from_bytes(&buf[at.clone()]) {
                headers.append(ENDPOINT_HEADERS[*which].clone(), value);
            }
        }
    } else {
        head::for_each_header(&buf[head.lines_at..head.len], |name, value| {
            let known = ENDPOINT_HEADERS.iter().find(|h| name.eq_ignore_ascii_case(h.as_str()));
            if let (Some(known), Ok(value)) = (known, HeaderValue::from_bytes(value)) {
                headers.append(known.clone(), value);
            }
        });
    }
    PlainHead { post: head.method == Method::POST, query, headers }
}

/// Any other request of `head`, its target escaped where the `http` crate refuses a byte
/// (jWebSocket clients send raw JSON); 400 if it is still no URI.
fn full_request(buf: &[u8], head: &Head) -> Result<Request<()>, StatusCode> {
    let uri = Uri::from_maybe_shared(escape_target(&buf[head.target.clone()]));
    let mut request = Request::new(());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri.map_err(|_| StatusCode::BAD_REQUEST)?;
    *request.version_mut() = if head.http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    let headers = request.headers_mut();
    let mut valid = true;
    head::for_each_header(&buf[head.lines_at..head.len], |name, value| {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => valid = false,
        }
    });
    match valid {
        true => Ok(request),
        false => Err(StatusCode::BAD_REQUEST),
    }
}

/// `target` with every byte outside RFC 3986's characters (and `#`, which would start a
/// fragment) percent-escaped.
pub fn escape_target(target: &[u8]) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b);
    if target.iter().all(|&b| keep(b)) {
        return Bytes::copy_from_slice(target);
    }
    let mut out = Vec::with_capacity(target.len() + 16);
    for &b in target {
        match keep(b) {
            true => out.push(b),
            false => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
    out.into()
}

/// Whether the whole body is in `buf` already (or none is to come), so `100 Continue` is
/// not needed; a body over the limit gets no `100 Continue` either (it is refused).
fn body_is_here(buf: &[u8], framing: Framing, max_body: usize) -> bool {
    match framing {
        Framing::Length(n) => n > max_body as u64 || buf.len() as u64 >= n,
        Framing::Chunked => !buf.is_empty(),
    }
}

/// How a body's read ended without a body or an error to hand on.
enum Ended {
    /// The chunked coding is malformed: 400, then close.
    Malformed,
    /// The client went away.
    Closed,
}

/// Reads a body framed by `framing` from `buf` and then `io`: the body, or why it is not
/// there (too large: refused unread; not in time).
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    framing: Framing,
    peer: &Peer,
    limits: Limits,
) -> Result<ReadBody, Ended> {
    let too_large = BodyError::TooLarge(limits.max_body);
    // Lent only once a read is needed: most requests have no body, or one already read with
    // their head, and need no deadline (a timer lent for nothing may cost a wheel operation).
    let mut deadline: Option<Lent> = None;
    let mut read_more = async |buf: &mut BytesMut| -> Result<Option<()>, Ended> {
        let deadline = deadline.get_or_insert_with(|| peer.timer.sleep_until(Instant::now() + limits.body_timeout));
        tokio::select! {
            biased;
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => Err(Ended::Closed),
                Ok(_) => Ok(Some(())),
            },
            _ = deadline => Ok(None),
        }
    };
    match framing {
        Framing::Length(0) => Ok(Ok(Bytes::new())),
        Framing::Length(n) if n > limits.max_body as u64 => Ok(Err(too_large)),
        Framing::Length(n) => {
            let n = n as usize;
            while buf.len() < n {
                // Room as the bytes come, not for the whole declared length: a client that
                // declares a large body and sends none makes the server hold no more than
                // one read's worth.
                buf.reserve((n - buf.len()).min(BODY_READ_SIZE));
                if read_more(buf).await?.is_none() {
                    return Ok(Err(BodyError::TimedOut));
                }
            }
            Ok(Ok(buf.split_to(n).freeze()))
        }
        Framing::Chunked => {
            let mut decoder = chunked::Decoder::default();
            let mut body = BytesMut::new();
            loop {
                let taken = decoder.decode(buf, &mut body, limits.max_body).map_err(|_| Ended::Malformed)?;
                buf.advance(taken);
                if body.len() > limits.max_body {
                    return Ok(Err(too_large));
                }
                if decoder.is_done() {
                    return Ok(Ok(body.freeze()));
                }
                buf.reserve(READ_SIZE);
                if read_more(buf).await?.is_none() {
                    return Ok(Err(BodyError::TimedOut));
                }
            }
        }
    }
}
