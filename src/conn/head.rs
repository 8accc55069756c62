//! A request's head, read from the bytes a connection has received: the request line (its
//! target taken as jWebSocket clients send it: raw JSON, raw spaces and all), the header lines,
//! and from them the one decision of where the request's body ends.
//!
//! This is the only place in pollgate that reads a head, for every request on every
//! connection, so nothing else can hold another opinion of where a request ends. The rules
//! are RFC 9112's, taken strictly where a proxy in front could read a message otherwise:
//! a body is framed by one `Content-Length` or by `Transfer-Encoding: chunked`, never both,
//! and anything ambiguous is refused (and the connection closed).

use std::ops::Range;

use hyper::{Method, StatusCode};

use crate::http::request::ENDPOINT_HEADERS;

/// The largest head (request line and header lines) read; a larger one gets 431.
pub const MAX_HEAD: usize = 400 * 1024;
/// The most header lines a head may have; more get 431.
pub const MAX_HEADERS: usize = 100;
/// The longest request target; a longer one gets 414 (the `http` crate's limit for a URI).
pub const MAX_TARGET: usize = 65_534;
/// Header lines parsed on the stack at first; a head with more is parsed again for up to
/// [`MAX_HEADERS`].
const FEW_HEADERS: usize = 32;
/// The most lines of [`ENDPOINT_HEADERS`] a [`Head`] notes; a head with more is read again
/// for them ([`for_each_header`]).
const MAX_KEPT: usize = 8;

/// What [`parse`] found in the bytes received so far.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Returned once per head and taken apart at once.
pub enum Parsed {
    /// Not a whole head yet (and within the limits so far).
    Partial,
    Complete(Head),
    /// A head that is refused with this status; the connection closes after the answer.
    Refused(StatusCode),
}

/// Where a request's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes follow the head (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the chunks say.
    Chunked,
}

/// A parsed head. The ranges index the bytes it was parsed from.
#[derive(Debug)]
pub struct Head {
    /// Its length, up to the end of the empty line (with the empty lines skipped before it).
    pub len: usize,
    pub method: Method,
    /// The request target as it came.
    pub target: Range<usize>,
    /// `HTTP/1.0` (else 1.1).
    pub http10: bool,
    /// Where the header lines start (they end at `len`).
    pub lines_at: usize,
    /// The lines of [`ENDPOINT_HEADERS`] (which one, and where its value is), the first
    /// `kept_len`; all of them unless `kept_all` is false.
    pub kept: [(usize, Range<usize>); MAX_KEPT],
    pub kept_len: usize,
    pub kept_all: bool,
    pub framing: Framing,
    /// The connection ends after this request: `Connection: close`, or HTTP/1.0.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Parses the head at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed {
    // RFC 9112 2.2: empty lines before a request line are ignored.
    let start = bytes.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(bytes.len());
    let rest = &bytes[start..];
    let Some(line_end) = memchr::memchr(b'\n', rest) else {
        return match rest.len() {
            n if n > MAX_TARGET + 64 => Parsed::Refused(StatusCode::URI_TOO_LONG),
            _ => Parsed::Partial,
        };
    };
    let Some(line) = rest[..line_end].strip_suffix(b"\r") else { return Parsed::Refused(StatusCode::BAD_REQUEST) };
    let (method, target, http10) = match request_line(line) {
        Ok(parts) => parts,
        Err(status) => return Parsed::Refused(status),
    };
    let headers_at = start + line_end + 1;
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut many;
    let (len, lines) = match httparse::parse_headers(&bytes[headers_at..], &mut few) {
        Ok(httparse::Status::Complete((n, lines))) => (n, lines),
        Err(httparse::Error::TooManyHeaders) => {
            many = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&bytes[headers_at..], &mut many) {
                Ok(httparse::Status::Complete((n, lines))) => (n, lines),
                Ok(httparse::Status::Partial) => return partial(bytes),
                Err(httparse::Error::TooManyHeaders) => {
                    return Parsed::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                }
                Err(_) => return Parsed::Refused(StatusCode::BAD_REQUEST),
            }
        }
        Ok(httparse::Status::Partial) => return partial(bytes),
        Err(_) => return Parsed::Refused(StatusCode::BAD_REQUEST),
    };
    let len = headers_at + len;
    if len > MAX_HEAD {
        return Parsed::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    // Every line ends with CRLF: a bare LF, which some parsers take as a line end and others
    // not, is refused (RFC 9112 2.2 lets a recipient choose).
    let lines_at = &bytes[headers_at..len];
    if memchr::memchr_iter(b'\n', lines_at).any(|at| at == 0 || lines_at[at - 1] != b'\r') {
        return Parsed::Refused(StatusCode::BAD_REQUEST);
    }
    let target = start + target.start..start + target.end;
    let offset = |s: &[u8]| s.as_ptr() as usize - bytes.as_ptr() as usize;
    let mut head = Head {
        len,
        method,
        target,
        http10,
        lines_at: headers_at,
        kept: std::array::from_fn(|_| (0, 0..0)),
        kept_len: 0,
        kept_all: true,
        framing: Framing::Length(0),
        close: http10,
        expect_continue: false,
    };
    let (mut hosts, mut lengths, mut length, mut codings) = (0, 0, 0u64, Codings::default());
    for line in lines.iter() {
        let value = line.value;
        match known(line.name) {
            Some(Known::Endpoint(which)) => {
                match head.kept_len < MAX_KEPT {
                    true => head.kept[head.kept_len] = (which, offset(value)..offset(value) + value.len()),
                    false => head.kept_all = false,
                }
                head.kept_len = (head.kept_len + 1).min(MAX_KEPT);
            }
            Some(Known::Host) => hosts += 1,
            Some(Known::ContentLength) => {
                lengths += 1;
                match content_length(value) {
                    Some(n) => length = n,
                    None => return Parsed::Refused(StatusCode::BAD_REQUEST),
                }
            }
            Some(Known::TransferEncoding) => codings.add(value),
            Some(Known::Connection) => {
                head.close |= value.split(|b| *b == b',').any(|o| o.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            Some(Known::Expect) => {
                head.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            None => {}
        }
    }
    // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; 6.1 and 6.3: a body has one
    // framing, a chunked one only in HTTP/1.1, and one length.
    let hosts_ok = if http10 { hosts <= 1 } else { hosts == 1 };
    head.framing = match codings.decide() {
        _ if !hosts_ok || lengths > 1 => return Parsed::Refused(StatusCode::BAD_REQUEST),
        Coded::None => Framing::Length(length),
        _ if http10 || lengths > 0 => return Parsed::Refused(StatusCode::BAD_REQUEST),
        Coded::Chunked => Framing::Chunked,
        Coded::Unsupported => return Parsed::Refused(StatusCode::NOT_IMPLEMENTED),
        Coded::Invalid => return Parsed::Refused(StatusCode::BAD_REQUEST),
    };
    Parsed::Complete(head)
}

/// A header line [`parse`] reads.
enum Known {
    /// One of [`ENDPOINT_HEADERS`], by its index.
    Endpoint(usize),
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
}

/// Which header line `name` is, if [`parse`] reads it. Names are looked up by length first,
/// so a line is compared with at most a couple of names of its length.
fn known(name: &str) -> Option<Known> {
    let name = name.as_bytes();
    let is = |lower: &str| same_name(name, lower.as_bytes());
    match name.len() {
        4 if is("host") => Some(Known::Host),
        6 if is("expect") => Some(Known::Expect),
        10 if is("connection") => Some(Known::Connection),
        14 if is("content-length") => Some(Known::ContentLength),
        17 if is("transfer-encoding") => Some(Known::TransferEncoding),
        _ => {
            ENDPOINT_HEADERS.iter().position(|h| h.as_str().len() == name.len() && is(h.as_str())).map(Known::Endpoint)
        }
    }
}

/// Whether header name `name` is `lower` (lowercase letters, digits and `-`, of the same
/// length) in any case, compared eight bytes at a time. Setting bit 0x20 of every byte folds
/// case exactly here: among the bytes a name may hold (httparse takes only tokens), the only
/// ones that fold onto a lowercase letter are its two cases, and none folds onto a digit or
/// `-` but itself.
fn same_name(name: &[u8], lower: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let word = |chunk: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(bytes)
    };
    name.len() == lower.len() && name.chunks(8).zip(lower.chunks(8)).all(|(a, b)| word(a) | FOLD == word(b) | FOLD)
}

/// Calls `f` with the name and value of every header line of a head that [`parse`] took
/// (`lines` from its `lines_at` to its `len`).
pub fn for_each_header(lines: &[u8], mut f: impl FnMut(&str, &[u8])) {
    let mut all = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if let Ok(httparse::Status::Complete((_, lines))) = httparse::parse_headers(lines, &mut all) {
        for line in lines.iter() {
            f(line.name, line.value);
        }
    }
}

/// An incomplete head: more may come, unless it is already too large.
fn partial(bytes: &[u8]) -> Parsed {
    match bytes.len() > MAX_HEAD {
        true => Parsed::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        false => Parsed::Partial,
    }
}

/// `method SP target SP HTTP/1.x` (without its line end): the method, where the target is in
/// `line`, and whether the version is 1.0. The version is what follows the line's last space,
/// so a raw space inside the target (jWebSocket's Java client sends `"a b"` raw) stays in it.
fn request_line(line: &[u8]) -> Result<(Method, Range<usize>, bool), StatusCode> {
    let bad = StatusCode::BAD_REQUEST;
    let method_end = memchr::memchr(b' ', line).ok_or(bad)?;
    let version_at = memchr::memrchr(b' ', line).ok_or(bad)? + 1;
    let method = match &line[..method_end] {
        b"GET" => Method::GET,
        b"POST" => Method::POST,
        other => Method::from_bytes(other).map_err(|_| bad)?,
    };
    let http10 = match &line[version_at..] {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        }
        _ => return Err(bad),
    };
    let target = method_end + 1..version_at - 1;
    if target.is_empty() || line[target.start] == b' ' {
        return Err(bad);
    }
    if target.len() > MAX_TARGET {
        return Err(StatusCode::URI_TOO_LONG);
    }
    // Control bytes are no part of any target (a space is taken, and escaped for routing).
    // Folded over every byte, without stopping at the first, so that it is checked many
    // bytes at a time.
    if line[target.clone()].iter().fold(false, |bad, &b| bad | (b < 0x20) | (b == 0x7f)) {
        return Err(bad);
    }
    Ok((method, target, http10))
}

/// A `Content-Length` value: digits only (leading zeros allowed, as every HTTP parser reads
/// them), no sign, no list, at most `u64::MAX`.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// The transfer codings of a request, over all its `Transfer-Encoding` lines, in order.
#[derive(Debug, Clone, Copy, Default)]
struct Codings {
    /// `Transfer-Encoding` lines seen.
    lines: u32,
    /// Codings listed, and how many of them are `chunked`.
    count: u32,
    chunked: u32,
    /// The last one listed is `chunked`.
    last_chunked: bool,
}

/// What the codings say of a request's body.
enum Coded {
    /// No `Transfer-Encoding`.
    None,
    /// `chunked`, alone.
    Chunked,
    /// Other codings, then `chunked`: well formed, but not implemented here (501).
    Unsupported,
    /// `chunked` not last, listed twice, or no coding at all: where the body ends is unknown.
    Invalid,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.lines += 1;
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
            self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.count += 1;
            self.chunked += u32::from(self.last_chunked);
        }
    }

    fn decide(&self) -> Coded {
        match *self {
            Codings { lines: 0, .. } => Coded::None,
            Codings { chunked: 1, last_chunked: true, count: 1, .. } => Coded::Chunked,
            Codings { chunked: 1, last_chunked: true, .. } => Coded::Unsupported,
            _ => Coded::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(head: &str) -> Parsed {
        parse(head.as_bytes())
    }

    fn complete(head: &str) -> Head {
        match parse_str(head) {
            Parsed::Complete(parsed) => parsed,
            other => panic!("{other:?}: {head:?}"),
        }
    }

    fn refused(head: &str) -> StatusCode {
        match parse_str(head) {
            Parsed::Refused(status) => status,
            other => panic!("not refused ({other:?}): {head:?}"),
        }
    }

    /// A head's method, target as it came, version, headers and framing.
    #[test]
    fn a_head_is_read_whole() {
        let head = "\r\nPOST /jWebSocket/http?data={\"a b\":\"<é>\"} HTTP/1.1\r\nHost: x\r\n\
                    Content-Length: 0012\r\nConnection: keep-alive, close\r\nExpect: 100-continue\r\n\r\nrest";
        let parsed = complete(head);
        assert_eq!(parsed.len, head.len() - "rest".len());
        assert_eq!(parsed.method, Method::POST);
        assert_eq!(&head[parsed.target.clone()], "/jWebSocket/http?data={\"a b\":\"<é>\"}");
        assert_eq!(parsed.framing, Framing::Length(12));
        assert!(parsed.close && parsed.expect_continue && !parsed.http10);
        let mut lines = Vec::new();
        for_each_header(&head.as_bytes()[parsed.lines_at..parsed.len], |n, v| lines.push((n.to_owned(), v.to_vec())));
        assert_eq!(lines[1], ("Content-Length".to_owned(), b"0012".to_vec()));
        assert_eq!(lines.len(), 4);
        assert_eq!(parsed.kept_len, 0, "none of the endpoint's headers");
        let endpoint = complete("GET /e HTTP/1.1\r\nHost: x\r\nOrigin: http://o\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n");
        let kept: Vec<usize> = endpoint.kept[..endpoint.kept_len].iter().map(|(which, _)| *which).collect();
        assert_eq!(
            kept.iter().map(|w| ENDPOINT_HEADERS[*w].as_str()).collect::<Vec<_>>(),
            ["origin", "x-forwarded-for"]
        );
        assert!(endpoint.kept_all);

        let chunked = complete("PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked);
        let old = complete("GET / HTTP/1.0\r\n\r\n");
        assert!(old.http10 && old.close, "HTTP/1.0 needs no Host and closes after its answer");
    }

    /// A head is partial until its empty line has come, wherever it is cut.
    #[test]
    fn a_head_is_partial_until_it_ends() {
        let head = "POST /jWebSocket/http?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        for end in 0..head.len() {
            assert!(matches!(parse_str(&head[..end]), Parsed::Partial), "{:?}", &head[..end]);
        }
    }

    /// Every ambiguous framing is refused: two lengths (even equal), a length with a sign,
    /// a list or no digits, both a length and chunked, chunked not last or twice, chunked in
    /// HTTP/1.0; other codings are not implemented.
    #[test]
    fn ambiguous_framing_is_refused() {
        for framing in [
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: +5",
            "Content-Length: 5, 5",
            "Content-Length: 0x5",
            "Content-Length: ",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: ,",
        ] {
            let head = format!("POST /x HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n");
            assert_eq!(refused(&head), StatusCode::BAD_REQUEST, "{framing:?}");
        }
        assert_eq!(refused("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), StatusCode::BAD_REQUEST);
        let gzip = "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(refused(gzip), StatusCode::NOT_IMPLEMENTED);
        let split =
            complete("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(split.framing, Framing::Chunked, "an empty line adds no coding");
        let padded = format!("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {}94\r\n\r\n", "0".repeat(9000));
        assert_eq!(complete(&padded).framing, Framing::Length(94), "leading zeros are digits");
    }

    /// RFC 9112's other musts: one Host in HTTP/1.1, at most one in HTTP/1.0; a request line
    /// of three parts with a known version; no bare LF; the limits on size.
    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /\r\nHost: x\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            "GET / http/1.1\r\nHost: x\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        ] {
            assert_eq!(refused(head), StatusCode::BAD_REQUEST, "{head:?}");
        }
        assert_eq!(refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_TARGET));
        assert_eq!(refused(&long), StatusCode::URI_TOO_LONG);
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n", "b".repeat(MAX_HEAD));
        assert_eq!(refused(&big), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    /// Header names are found in any case, and no other token is taken for one: every name
    /// read, with each byte changed into every other byte a name may hold.
    #[test]
    fn header_names_are_matched_in_any_case_only() {
        let tchars: Vec<u8> =
            (0u8..128).filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)).collect();
        let mut names: Vec<&str> = vec!["host", "expect", "connection", "content-length", "transfer-encoding"];
        names.extend(ENDPOINT_HEADERS.iter().map(|h| h.as_str()));
        for name in names {
            assert!(known(name).is_some(), "{name}");
            assert!(known(&name.to_ascii_uppercase()).is_some(), "{name}");
            for at in 0..name.len() {
                for &b in &tchars {
                    let mut other = name.as_bytes().to_vec();
                    if other[at].eq_ignore_ascii_case(&b) {
                        continue;
                    }
                    other[at] = b;
                    let other = String::from_utf8(other).unwrap();
                    assert!(known(&other).is_none(), "{other} taken for {name}");
                }
            }
        }
        assert!(known("hostx").is_none() && known("hos").is_none() && known("").is_none());
    }
}
