//! pollgate's own HTTP/1.1 for what a long-poll client sends all day: a GET or POST of the
//! endpoint, its body (if any) framed by `Content-Length`. Anything else on a connection goes
//! to hyper, with the bytes already read, for the rest of the connection's life.
//!
//! Why: hyper's general machinery costs about 1 µs per request here, and a long-poll round
//! trip makes two requests (docs/PERFORMANCE.md). What this path serves, it serves as hyper
//! would: the same answers (the service makes them), the same head and body deadlines,
//! keep-alive and pipelining, a poll dropped when its client goes away, shutdown after the
//! request in flight. It reads request targets raw, as jWebSocket clients send them (JSON
//! unescaped); hyper gets them through [`crate::lenient`].

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{Body, Peer, PlainRequest, Service, ENDPOINT_HEADERS};

/// A head not complete within this many bytes goes to hyper, which answers heads up to its
/// own limit (`MAX_HEAD_BYTES` in `server.rs`).
const MAX_HEAD: usize = 16 * 1024;
/// The most header lines this path parses; a head with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// The most lines of [`ENDPOINT_HEADERS`] this path keeps; a head with more goes to hyper.
const MAX_KEPT: usize = 8;
/// What a read asks for at least: a whole head, as clients send it, in one read.
const READ_SIZE: usize = 4096;
/// What a read of a body asks for at most.
const BODY_READ_SIZE: usize = 64 * 1024;
/// Room for a response head: the status line and the few headers the endpoint answers.
const HEAD_SIZE: usize = 512;
/// A response body up to this size is written with the head, in one write.
const GATHER_BODY: usize = 16 * 1024;

/// How a connection served here ended.
pub enum Served<S> {
    /// Closed: by the client, a deadline, an error or shutdown.
    Closed,
    /// Handed on: hyper serves the rest of the connection, starting with these bytes.
    ToHyper(Rewind<S>),
}

/// Serves a connection's requests for as long as they are the endpoint's plain ones.
pub async fn serve<S>(mut io: S, peer: &Arc<Peer>, service: &Arc<Service>, stop: &CancellationToken) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &service.engine.config;
    let header_timeout = Duration::from_secs(config.header_read_timeout);
    let body_timeout = Duration::from_secs(config.body_read_timeout);
    // Made once: each `cancelled()` joins the token's waiters anew.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // What the client sent and no request has taken yet (a pipelined request's bytes, say).
    // Emptied and freed between requests, so a held poll does not keep a read buffer.
    let mut buf = BytesMut::new();
    loop {
        // The next head, within `header_read_timeout` of the last response (or the accept),
        // however slowly it trickles in; shutdown ends the wait.
        let head = {
            let deadline = peer.timer.sleep_until(Instant::now() + header_timeout);
            tokio::pin!(deadline);
            loop {
                match parse(&buf, service.endpoint(), config.maxframesize) {
                    Parsed::Fast(head) => break head,
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    Parsed::Partial | Parsed::Other => return Served::ToHyper(Rewind::new(buf.freeze(), io)),
                }
                if buf.capacity() - buf.len() < READ_SIZE / 4 {
                    buf.reserve(READ_SIZE);
                }
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return Served::Closed,
                        Ok(_) => {}
                    },
                    _ = &mut deadline => return Served::Closed,
                    _ = &mut stopped => return Served::Closed,
                }
            }
        };
        let mut headers = HeaderMap::new();
        for (name, at) in head.kept.iter().take(head.kept_len) {
            // httparse admits fewer bytes in a value than `HeaderValue` does: this never fails.
            // A copy, not a slice of `buf`: a held poll keeps the `Origin`, and a slice would
            // keep the whole read buffer with it.
            if let Ok(value) = HeaderValue::from_bytes(&buf[at.clone()]) {
                headers.append(ENDPOINT_HEADERS[*name].clone(), value);
            }
        }
        let query = Bytes::copy_from_slice(&buf[head.query.clone()]);
        buf.advance(head.len);

        // The body, within `body_read_timeout`; one that does not come in time is answered by
        // the service (408), and the connection closes after it (its end is unknown).
        let mut close = head.close;
        let body = if buf.len() >= head.body_len {
            Some(buf.split_to(head.body_len).freeze())
        } else {
            let deadline = peer.timer.sleep_until(Instant::now() + body_timeout);
            tokio::pin!(deadline);
            loop {
                // Room as the bytes come, not for the whole declared length: a client that
                // declares a large body and sends none makes the server hold no more than
                // one read's worth.
                buf.reserve((head.body_len - buf.len()).min(BODY_READ_SIZE));
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return Served::Closed,
                        Ok(_) if buf.len() >= head.body_len => break Some(buf.split_to(head.body_len).freeze()),
                        Ok(_) => {}
                    },
                    _ = &mut deadline => break None,
                }
            }
        };
        close |= body.is_none();
        if buf.is_empty() {
            buf = BytesMut::new();
        }

        // The answer. Meanwhile the connection is watched: a client that goes away drops its
        // request (a held poll ends at once); a pipelined request waits in `buf`.
        let request = PlainRequest { post: head.post, query, headers, body };
        let resp = {
            let answer = service.clone().handle_plain(request, peer.clone());
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    biased;
                    resp = &mut answer => break resp,
                    read = io.read_buf(&mut buf), if buf.len() < MAX_HEAD => match read {
                        Ok(0) | Err(_) => return Served::Closed,
                        Ok(_) => {}
                    },
                }
            }
        };
        close |= stop.is_cancelled();
        if write_response(&mut io, resp, close).await.is_err() || close {
            return Served::Closed;
        }
    }
}

/// What [`parse`] found in the bytes read so far.
#[allow(clippy::large_enum_variant)] // Returned once per head and taken apart at once.
enum Parsed {
    /// A request this path serves.
    Fast(Head),
    /// Not a whole head yet.
    Partial,
    /// A request for hyper (or bytes that are no request: hyper answers them).
    Other,
}

/// What is kept of a head this path serves; the ranges index the bytes it was parsed from.
struct Head {
    /// Its length, up to the end of the empty line.
    len: usize,
    post: bool,
    /// The request target after the first `?`.
    query: Range<usize>,
    /// Which of [`ENDPOINT_HEADERS`] came, where their values are; the first `kept_len`.
    kept: [(usize, Range<usize>); MAX_KEPT],
    kept_len: usize,
    /// `Content-Length`, 0 without one.
    body_len: usize,
    /// `Connection: close`.
    close: bool,
}

/// Parses a head from `bytes` and decides who serves it. This path takes HTTP/1.1 GET and
/// POST of `endpoint` with at most one `Content-Length` of at most `max_body` bytes (a GET:
/// none, or 0), and no `Transfer-Encoding`, `Expect` or `Upgrade`, nor a `Connection` other
/// than `close` or `keep-alive`. Everything else, hyper serves as it always has.
fn parse(bytes: &[u8], endpoint: &str, max_body: usize) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Partial;
    }
    let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(bytes, &mut lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let post = match req.method {
        Some("GET") => false,
        Some("POST") => true,
        _ => return Parsed::Other,
    };
    // Where a piece of the head (a slice of `bytes`) starts in it.
    let offset = |s: &[u8]| s.as_ptr() as usize - bytes.as_ptr() as usize;
    // The target as it came: jWebSocket clients send raw JSON in it, which the parameters'
    // parser takes as it is (hyper needs it escaped first: `crate::lenient`).
    let target = req.path.unwrap_or("").as_bytes();
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(at) => (&target[..at], offset(&target[at + 1..])..offset(target) + target.len()),
        None => (target, 0..0),
    };
    if req.version != Some(1) || path != endpoint.as_bytes() {
        return Parsed::Other;
    }
    let mut head =
        Head { len, post, query, kept: std::array::from_fn(|_| (0, 0..0)), kept_len: 0, body_len: 0, close: false };
    let mut lengths = 0;
    for line in req.headers.iter() {
        let (name, value) = (line.name, line.value);
        if name.eq_ignore_ascii_case("content-length") {
            let digits = !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
            lengths += 1;
            match std::str::from_utf8(value).ok().filter(|_| digits).and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n <= max_body && (post || n == 0) => head.body_len = n,
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if !option.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::Other;
                }
            }
        } else if ["transfer-encoding", "expect", "upgrade"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Parsed::Other;
        } else if let Some(which) = ENDPOINT_HEADERS.iter().position(|h| name.eq_ignore_ascii_case(h.as_str())) {
            if head.kept_len == MAX_KEPT {
                return Parsed::Other;
            }
            let start = offset(value);
            head.kept[head.kept_len] = (which, start..start + value.len());
            head.kept_len += 1;
        }
    }
    if lengths > 1 {
        return Parsed::Other;
    }
    Parsed::Fast(head)
}

/// Writes `resp` as hyper would: status line, the response's headers, `content-length` (or
/// chunked framing for a body of unknown length), `date`, then the body.
async fn write_response<S>(io: &mut S, resp: Response<Body>, close: bool) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    // Room for the head and a body written with it: growing it would copy both.
    let gathered = body.size_hint().upper().filter(|n| *n <= GATHER_BODY as u64).unwrap_or(0);
    let mut out = Vec::with_capacity(HEAD_SIZE + gathered as usize);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut chunked = false;
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        match body.size_hint().exact() {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    date::write(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    if bodiless {
        return io.write_all(&out).await;
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            write!(out, "{:x}\r\n", data.len())?;
        }
        if data.len() <= GATHER_BODY {
            out.extend_from_slice(&data);
        } else {
            // What is gathered, then the data, in one vectored write where it fits.
            io.write_all_buf(&mut Buf::chain(out.as_slice(), data)).await?;
            out.clear();
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() > GATHER_BODY {
            io.write_all(&out).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(&out).await
}

/// The `date` header's value, made once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        /// The second last formatted, and its text.
        static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn write(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        LAST.with_borrow_mut(|(last, text)| {
            if *last != second {
                *last = second;
                *text = httpdate::fmt_http_date(now);
            }
            out.extend_from_slice(text.as_bytes());
        });
    }
}

/// A connection handed to hyper: it reads the bytes already read from it first.
pub struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(read: Bytes, inner: S) -> Self {
        Rewind { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, out);
        }
        let n = self.read.len().min(out.remaining());
        out.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "/jWebSocket/http";

    fn parse_str(head: &str) -> Parsed {
        parse(head.as_bytes(), ENDPOINT, 1000)
    }

    fn fast(head: &str) -> Head {
        match parse_str(head) {
            Parsed::Fast(parsed) => parsed,
            Parsed::Partial => panic!("partial: {head:?}"),
            Parsed::Other => panic!("for hyper: {head:?}"),
        }
    }

    fn for_hyper(head: &str) -> bool {
        matches!(parse_str(head), Parsed::Other)
    }

    /// A plain GET and POST of the endpoint are this path's, with their query, body length
    /// and the headers the endpoint reads (and no others).
    #[test]
    fn the_endpoint_s_plain_requests_are_served_here() {
        let head = "GET /jWebSocket/http?connectionId=a&action=sync HTTP/1.1\r\nHost: x\r\n\
                    X-Pollgate-Connection: c\r\nOrigin: http://o\r\nAccept: */*\r\n\r\nrest";
        let parsed = fast(head);
        assert_eq!(parsed.len, head.len() - "rest".len());
        assert!(!parsed.post && !parsed.close && parsed.body_len == 0);
        assert_eq!(&head[parsed.query.clone()], "connectionId=a&action=sync");
        let kept: Vec<(&str, &str)> = parsed.kept[..parsed.kept_len]
            .iter()
            .map(|(which, at)| (ENDPOINT_HEADERS[*which].as_str(), &head[at.clone()]))
            .collect();
        assert_eq!(kept, [("x-pollgate-connection", "c"), ("origin", "http://o")]);

        let post =
            fast("POST /jWebSocket/http HTTP/1.1\r\ncontent-length: 12\r\nConnection: Keep-Alive, close\r\n\r\n");
        assert!(post.post && post.close && post.body_len == 12 && post.query.is_empty());
    }

    /// Everything else goes to hyper: other paths, methods and versions, bodies not framed by
    /// one plain `Content-Length` within the limit, upgrades, `Expect`, and what is no HTTP.
    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "GET /jWebSocket/httpx HTTP/1.1\r\n\r\n",
            "GET /jWebSocket/http/ HTTP/1.1\r\n\r\n",
            "GET /index.html HTTP/1.1\r\n\r\n",
            "GET http://x/jWebSocket/http HTTP/1.1\r\n\r\n",
            "HEAD /jWebSocket/http HTTP/1.1\r\n\r\n",
            "OPTIONS /jWebSocket/http HTTP/1.1\r\n\r\n",
            "PUT /jWebSocket/http HTTP/1.1\r\n\r\n",
            "GET /jWebSocket/http HTTP/1.0\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "GET /jWebSocket/http HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "POST /jWebSocket/http HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /jWebSocket/http HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /jWebSocket/http HTTP/1.1\r\nConnection: keep-alive, TE\r\n\r\n",
            "GET /jWebSocket/http HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "\u{1}\u{2}\u{3}\r\n\r\n",
        ] {
            assert!(for_hyper(head), "{head:?}");
        }
        let many = format!("GET /jWebSocket/http HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        assert!(for_hyper(&many), "more header lines than this path parses");
        let kept =
            format!("GET /jWebSocket/http HTTP/1.1\r\n{}\r\n", "X-Forwarded-For: 1.2.3.4\r\n".repeat(MAX_KEPT + 1));
        assert!(for_hyper(&kept), "more kept lines than this path keeps");
        let zero = fast("GET /jWebSocket/http HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(zero.body_len, 0, "a GET may say it has no body");
    }

    /// A raw target (jWebSocket's JSON) is taken as it came; one the parser cannot read (with
    /// a raw space, or bytes that are no UTF-8) goes to hyper, which gets it escaped.
    #[test]
    fn raw_targets_are_taken_as_they_came() {
        let head = "GET /jWebSocket/http?data={\"a\":\"<b>#ü\"}&x=1 HTTP/1.1\r\n\r\n";
        let parsed = fast(head);
        assert_eq!(&head[parsed.query.clone()], "data={\"a\":\"<b>#ü\"}&x=1");
        assert!(for_hyper("GET /jWebSocket/http?data=a b HTTP/1.1\r\n\r\n"));
        let invalid = b"GET /jWebSocket/http?data=\xff\xfe HTTP/1.1\r\n\r\n";
        assert!(matches!(parse(invalid, ENDPOINT, 1000), Parsed::Other));
        let empty = fast("GET /jWebSocket/http? HTTP/1.1\r\n\r\n");
        assert!(empty.query.is_empty());
    }

    /// A head cut anywhere is partial until its empty line has come.
    #[test]
    fn a_head_is_partial_until_it_ends() {
        let head = "POST /jWebSocket/http?a=b HTTP/1.1\r\nContent-Length: 3\r\nOrigin: x\r\n\r\n";
        for end in 0..head.len() {
            assert!(matches!(parse_str(&head[..end]), Parsed::Partial), "{:?}", &head[..end]);
        }
        assert_eq!(fast(head).body_len, 3);
    }
}
