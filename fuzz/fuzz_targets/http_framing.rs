//! Fuzz target `http_framing`: arbitrary bytes, cut into arbitrary reads, through pollgate's
//! whole connection loop (`pollgate::fuzzing::serve_connection`: head parsing, body framing,
//! pipelining, answers) with a handler that records every request it is given, against a
//! reference framing of the same bytes written here, line by line, from RFC 9112.
//!
//! The requests handed on (their number, methods, targets and bodies) must be the
//! reference's, and the connection must be refused exactly where the reference refuses it;
//! and they must be the same however the bytes are cut into reads.
//!
//! The first input byte picks the read sizes; the rest is what the client sends, after which
//! it closes its side.
#![no_main]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use pollgate::fuzzing::{escape_target, serve_connection, Handler, Limits};
use pollgate::http::body::{text_response, Body, BodyError, ReadBody};
use pollgate::http::request::{Peer, PlainRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

const ENDPOINT: &str = "/jWebSocket/http";
/// Small, so that bodies over the limit are common.
const MAX_BODY: usize = 64;

/// A request as the handler got it (or the reference framed it).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    /// Escaped as the loop escapes a target for routing; for an endpoint GET or POST, the
    /// endpoint, `?` and the query as it came.
    target: Vec<u8>,
    body: Result<Vec<u8>, &'static str>,
}

/// How the bytes ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// The client's bytes ran out (between requests or within one).
    Eof,
    /// A request was refused (malformed, or a body over the limit): the connection closes.
    Refused,
    /// A request asked for the connection to close after it (`Connection: close`, HTTP/1.0).
    Close,
}

/// The recording handler: every request it gets is answered `200 ok` at once.
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

fn body_of(body: &ReadBody) -> Result<Vec<u8>, &'static str> {
    match body {
        Ok(b) => Ok(b.to_vec()),
        Err(BodyError::TooLarge(_)) => Err("too large"),
        Err(BodyError::TimedOut) => Err("timed out"),
    }
}

impl Handler for Recorder {
    fn endpoint(&self) -> &str {
        ENDPOINT
    }

    fn limits(&self) -> Limits {
        let long = Duration::from_secs(3600);
        Limits { header_timeout: long, body_timeout: long, max_body: MAX_BODY }
    }

    fn handle_plain(
        self: Arc<Self>,
        req: PlainRequest,
        _: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        let mut target = format!("{ENDPOINT}?").into_bytes();
        target.extend_from_slice(&req.query);
        let method = if req.post { "POST" } else { "GET" }.to_owned();
        self.seen.lock().unwrap().push(Seen { method, target, body: body_of(&req.body) });
        std::future::ready(text_response(StatusCode::OK, "ok"))
    }

    fn handle(
        self: Arc<Self>,
        req: Request<ReadBody>,
        _: Arc<Peer>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        let target = req.uri().to_string().into_bytes();
        let seen = Seen { method: req.method().to_string(), target, body: body_of(req.body()) };
        self.seen.lock().unwrap().push(seen);
        std::future::ready(text_response(StatusCode::OK, "ok"))
    }
}

/// The client's bytes, handed out in reads of the sizes `cuts` cycles through; then EOF.
/// What the server writes is kept.
struct Client<'a> {
    input: &'a [u8],
    pos: usize,
    cuts: Vec<usize>,
    turn: usize,
    written: Vec<u8>,
}

impl AsyncRead for Client<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let cut = self.cuts[self.turn % self.cuts.len()];
        self.turn += 1;
        let n = cut.min(buf.remaining()).min(self.input.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `input` through the connection loop in reads of `cuts`: the requests handed on, and
/// whether the loop refused one (an answer of 400 or more that it wrote itself).
fn through_the_loop(input: &[u8], cuts: Vec<usize>) -> (Vec<Seen>, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let recorder = Arc::new(Recorder { seen: Mutex::new(Vec::new()) });
    let mut client = Client { input, pos: 0, cuts, turn: 0, written: Vec::new() };
    let peer = Arc::new(Peer::new(([127, 0, 0, 1], 1).into()));
    runtime.block_on(serve_connection(&mut client, &peer, &recorder, &CancellationToken::new()));
    let seen = recorder.seen.lock().unwrap().clone();
    // The handler answers 200 to everything; a 4xx or 5xx is the loop's own refusal.
    let refused = client.written.windows(10).any(|w| w.starts_with(b"HTTP/1.1 ") && matches!(w[9], b'4' | b'5'));
    (seen, refused)
}

/// Optional white space (SP, HTAB) trimmed from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether `line`, a chunk-size line so far (without its LF), is or may become a valid one:
/// hex digits (at most 16 but for leading zeros), optional SP/HTAB, an optional `;` and
/// extension bytes, then CR.
fn chunk_line_ok(line: &[u8]) -> bool {
    let (body, cr) = match line.iter().position(|b| *b == b'\r') {
        Some(k) if k + 1 == line.len() => (&line[..k], true),
        Some(_) => return false,
        None => (line, false),
    };
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return body.is_empty() && !cr;
    }
    if body[..digits].iter().skip_while(|b| **b == b'0').count() > 16 {
        return false;
    }
    let rest = &body[digits..];
    let ws = rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    match rest.get(ws) {
        None => true,
        Some(b';') => rest[ws + 1..].iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)),
        Some(_) => false,
    }
}

/// Whether `line`, a trailer line so far (without its LF), is or may become a valid one:
/// visible bytes, SP and HTAB, then CR.
fn trailer_ok(line: &[u8]) -> bool {
    let body = match line.iter().position(|b| *b == b'\r') {
        Some(k) if k + 1 == line.len() => &line[..k],
        Some(_) => return false,
        None => line,
    };
    body.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reference: frames `input` request by request, as RFC 9112 reads it (strictly), with
/// pollgate's limits. Written apart from the server's code, line by line on the whole input.
fn reference(input: &[u8]) -> (Vec<Seen>, End) {
    let mut seen = Vec::new();
    let mut at = 0;
    loop {
        while at < input.len() && matches!(input[at], b'\r' | b'\n') {
            at += 1;
        }
        if at == input.len() {
            return (seen, End::Eof);
        }
        // The head: lines (ended by LF) up to the first empty one; once it is whole, every
        // line must have ended with CRLF.
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut pos = at;
        loop {
            let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else { return (seen, End::Eof) };
            let line = &input[pos..pos + nl];
            pos += nl + 1;
            if line.is_empty() || line == b"\r" {
                if line.is_empty() {
                    return (seen, End::Refused);
                }
                break;
            }
            lines.push(line);
        }
        let Some(lines) = lines.iter().map(|l| l.strip_suffix(b"\r")).collect::<Option<Vec<_>>>() else {
            return (seen, End::Refused);
        };
        let Some((request_line, header_lines)) = lines.split_first() else { return (seen, End::Refused) };
        // METHOD SP target SP HTTP/1.x; the target runs to the last space.
        let Some(sp1) = request_line.iter().position(|b| *b == b' ') else { return (seen, End::Refused) };
        let sp2 = request_line.iter().rposition(|b| *b == b' ').unwrap();
        let method = &request_line[..sp1];
        let version = &request_line[sp2 + 1..];
        if sp2 <= sp1 + 1 || method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
            return (seen, End::Refused);
        }
        let http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return (seen, End::Refused),
        };
        let target = &request_line[sp1 + 1..sp2];
        if target[0] == b' ' || target.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            return (seen, End::Refused);
        }
        // Header lines: name ":" OWS value OWS.
        if header_lines.len() > 100 {
            return (seen, End::Refused);
        }
        let (mut hosts, mut lengths, mut length, mut te_lines) = (0, 0, 0u64, 0);
        let mut codings: Vec<Vec<u8>> = Vec::new();
        let mut close = http10;
        for line in header_lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else { return (seen, End::Refused) };
            let name = &line[..colon];
            let value = trim_ows(&line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                return (seen, End::Refused);
            }
            if value.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
                return (seen, End::Refused);
            }
            let name = name.to_ascii_lowercase();
            match name.as_slice() {
                b"host" => hosts += 1,
                b"content-length" => {
                    lengths += 1;
                    let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
                    let parsed = std::str::from_utf8(value).ok().filter(|_| digits).map(|v| v.trim_start_matches('0'));
                    match parsed.map(|v| if v.is_empty() { Ok(0) } else { v.parse::<u64>() }) {
                        Some(Ok(n)) => length = n,
                        _ => return (seen, End::Refused),
                    }
                }
                b"transfer-encoding" => {
                    te_lines += 1;
                    for c in value.split(|b| *b == b',') {
                        let c = c.trim_ascii();
                        if !c.is_empty() {
                            codings.push(c.to_ascii_lowercase());
                        }
                    }
                }
                b"connection" => {
                    close |= value.split(|b| *b == b',').any(|o| o.trim_ascii().eq_ignore_ascii_case(b"close"))
                }
                _ => {}
            }
        }
        if hosts > 1 || (!http10 && hosts == 0) || lengths > 1 {
            return (seen, End::Refused);
        }
        let chunked = if te_lines > 0 {
            if http10 || lengths > 0 || codings != [b"chunked".to_vec()] {
                return (seen, End::Refused);
            }
            true
        } else {
            false
        };
        // The target as the handler gets it.
        let method_text = String::from_utf8(method.to_vec()).unwrap();
        let path = target.split(|b| *b == b'?').next().unwrap();
        let plain = (method == b"GET" || method == b"POST") && path == ENDPOINT.as_bytes();
        let target_seen = if plain {
            let query = target.iter().position(|b| *b == b'?').map_or(&b""[..], |q| &target[q + 1..]);
            [format!("{ENDPOINT}?").as_bytes(), query].concat()
        } else {
            match http::Uri::from_maybe_shared(escape_target(target)) {
                Ok(uri) => uri.to_string().into_bytes(),
                Err(_) => return (seen, End::Refused),
            }
        };
        // The body.
        let body: Result<Vec<u8>, &'static str>;
        if chunked {
            let mut data = Vec::new();
            loop {
                let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else {
                    // A chunk line is refused at its first wrong byte, whole or not.
                    return (seen, if chunk_line_ok(&input[pos..]) { End::Eof } else { End::Refused });
                };
                let line = &input[pos..pos + nl];
                pos += nl + 1;
                if !line.ends_with(b"\r") || !chunk_line_ok(line) {
                    return (seen, End::Refused);
                }
                let line = &line[..line.len() - 1];
                let size_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
                let size = u64::from_str_radix(std::str::from_utf8(&line[..size_end]).unwrap(), 16).unwrap_or(0);
                if size == 0 {
                    // Trailer lines, then the empty line; refused at a first wrong byte.
                    loop {
                        let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else {
                            return (seen, if trailer_ok(&input[pos..]) { End::Eof } else { End::Refused });
                        };
                        let line = &input[pos..pos + nl];
                        pos += nl + 1;
                        if !line.ends_with(b"\r") || !trailer_ok(line) {
                            return (seen, End::Refused);
                        }
                        if line == b"\r" {
                            break;
                        }
                    }
                    break;
                }
                let end = pos as u64 + size;
                if data.len() as u64 + size > MAX_BODY as u64 {
                    // Over the limit: refused once that much has been read.
                    let available = (input.len() - pos) as u64;
                    if data.len() as u64 + available.min(size) > MAX_BODY as u64 {
                        seen.push(Seen { method: method_text, target: target_seen, body: Err("too large") });
                        return (seen, End::Close);
                    }
                    return (seen, End::Eof);
                }
                if end > input.len() as u64 {
                    return (seen, End::Eof);
                }
                data.extend_from_slice(&input[pos..end as usize]);
                pos = end as usize;
                // CRLF after the data, refused at its first wrong byte.
                for want in [b'\r', b'\n'] {
                    match input.get(pos) {
                        None => return (seen, End::Eof),
                        Some(b) if *b != want => return (seen, End::Refused),
                        Some(_) => pos += 1,
                    }
                }
            }
            body = Ok(data);
        } else if length > MAX_BODY as u64 {
            seen.push(Seen { method: method_text, target: target_seen, body: Err("too large") });
            return (seen, End::Close);
        } else {
            if (input.len() - pos) < length as usize {
                return (seen, End::Eof);
            }
            body = Ok(input[pos..pos + length as usize].to_vec());
            pos += length as usize;
        }
        seen.push(Seen { method: method_text, target: target_seen, body });
        if close {
            return (seen, End::Close);
        }
        at = pos;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let (expected, end) = reference(input);
    let (whole, refused) = through_the_loop(input, vec![usize::MAX]);
    assert_eq!(whole, expected, "the requests handed on are not the reference's (end: {end:?})");
    assert_eq!(refused, end == End::Refused, "refused where the reference says {end:?}");
    // The same bytes in reads of other sizes: 1, 2, 3, ... or as the seed byte's bits say.
    let cuts: Vec<usize> = (0..8).map(|i| 1 + ((usize::from(seed) >> i) & 1) * (1 + i * 7)).collect();
    for cuts in [vec![1], vec![usize::from(seed % 13) + 1], cuts] {
        let (split, split_refused) = through_the_loop(input, cuts.clone());
        assert_eq!(split, whole, "reads of {cuts:?} changed the requests");
        assert_eq!(split_refused, refused, "reads of {cuts:?} changed the refusal");
    }
});
