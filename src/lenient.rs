//! A stream adapter in front of hyper that percent-escapes the bytes of a request target
//! which the `http` crate refuses (`"`, `<`, `>`, `` ` ``, `#`, non-ASCII), so that
//! jWebSocket clients can keep sending raw JSON in query strings.
//!
//! It follows HTTP/1.1 message framing (request line, headers, `Content-Length` body) so that
//! only request targets are touched. A chunked request body switches the adapter to plain
//! pass-through for the rest of the connection: clients that send chunked bodies encode
//! their URLs properly.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header lines longer than this are not inspected for framing (hyper refuses them anyway).
const MAX_HEADER_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading the method (and any blank lines before it).
    Method,
    /// Inside the request target: escape what `http` would refuse.
    Target,
    /// The rest of the request line (` HTTP/1.1\r\n`).
    Version,
    /// Header lines, up to the empty line.
    Headers,
    /// A body of known length: that many bytes pass through untouched.
    Body(u64),
    /// Framing unknown from here (chunked body): everything passes through.
    PassThrough,
}

/// Wraps a client stream; reads are rewritten as described in the module docs.
pub struct LenientTarget<S> {
    inner: S,
    state: State,
    /// Transformed bytes not yet handed to the reader.
    out: Vec<u8>,
    out_pos: usize,
    /// The header line being read, to find `Content-Length` and `Transfer-Encoding`.
    line: Vec<u8>,
    content_length: u64,
    chunked: bool,
}

impl<S> LenientTarget<S> {
    pub fn new(inner: S) -> Self {
        LenientTarget {
            inner,
            state: State::Method,
            out: Vec::new(),
            out_pos: 0,
            line: Vec::new(),
            content_length: 0,
            chunked: false,
        }
    }

    /// Bytes the `http` crate refuses in a path or query.
    const fn needs_escape(byte: u8) -> bool {
        matches!(byte, b'"' | b'#' | b'<' | b'>' | b'`' | 0x7f..=0xff)
    }

    /// The bytes at which a request target stops passing through: its end (space, line
    /// end) or a byte to escape. A table, so the scan costs one load per byte.
    const TARGET_STOPS: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let byte = b as u8;
            table[b] = matches!(byte, b' ' | b'\r' | b'\n') || Self::needs_escape(byte);
            b += 1;
        }
        table
    };

    /// Whether a space in a request target, followed by `after`, ends the target: the version
    /// (`HTTP/`) follows. A space followed by anything else is the client's (jWebSocket's
    /// Java client sends `"a b"` raw) and is escaped. When too little has arrived to tell,
    /// the space ends the target, as it would without this adapter.
    fn ends_target(after: &[u8]) -> bool {
        let n = after.len().min(5);
        after[..n] == b"HTTP/"[..n]
    }

    /// Advances the framing state over the bytes of `input` that pass through unchanged,
    /// stopping at the first byte that must be escaped; returns how many bytes passed.
    /// Works a run of bytes at a time: most reads need no escape and are never copied.
    fn scan(&mut self, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match self.state {
                State::PassThrough => return input.len(),
                State::Body(left) => {
                    let n = left.min(rest.len() as u64);
                    i += n as usize;
                    self.state = if left == n { State::Method } else { State::Body(left - n) };
                }
                State::Method => match memchr::memchr(b' ', rest) {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::Target;
                    }
                    None => return input.len(),
                },
                State::Target => {
                    let end = rest.iter().position(|&b| Self::TARGET_STOPS[usize::from(b)]);
                    let Some(p) = end else { return input.len() };
                    let b = rest[p];
                    if Self::needs_escape(b) || b == b' ' && !Self::ends_target(&rest[p + 1..]) {
                        return i + p;
                    }
                    i += p + 1;
                    self.state = if b == b'\n' { self.start_headers() } else { State::Version };
                }
                State::Version => match memchr::memchr(b'\n', rest) {
                    Some(p) => {
                        i += p + 1;
                        self.state = self.start_headers();
                    }
                    None => return input.len(),
                },
                State::Headers => {
                    let Some(p) = memchr::memchr(b'\n', rest) else {
                        // A line split across reads: keep its start (bounded) for later.
                        let room = MAX_HEADER_LINE.saturating_sub(self.line.len());
                        self.line.extend_from_slice(&rest[..rest.len().min(room)]);
                        return input.len();
                    };
                    i += p + 1;
                    self.state = if self.line.is_empty() {
                        self.header_line(&rest[..p])
                    } else {
                        let room = MAX_HEADER_LINE.saturating_sub(self.line.len());
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..p.min(room)]);
                        let next = self.header_line(&line);
                        line.clear();
                        self.line = line;
                        next
                    };
                }
            }
        }
        input.len()
    }

    /// Runs `input` through the state machine, appending the result, escaped, to `self.out`.
    fn transform(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let n = self.scan(input);
            self.out.extend_from_slice(&input[..n]);
            input = &input[n..];
            // `scan` stops only before a byte of a request target that must be escaped.
            if let Some((&b, rest)) = input.split_first() {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                self.out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                input = rest;
            }
        }
    }

    fn start_headers(&mut self) -> State {
        self.line.clear();
        self.content_length = 0;
        self.chunked = false;
        State::Headers
    }

    /// Interprets a complete header line (without its `\n`); returns the next state.
    fn header_line(&mut self, line: &[u8]) -> State {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return if self.chunked {
                State::PassThrough
            } else if self.content_length > 0 {
                State::Body(self.content_length)
            } else {
                State::Method
            };
        }
        // Only two headers matter for framing; skip the others without decoding them.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            return State::Headers;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            let (name, value) = (line[..colon].trim_ascii(), &line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"content-length") {
                // hyper rejects a bad value; if it did not, pass through to stay safe.
                match std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()) {
                    Some(n) => self.content_length = n,
                    None => self.chunked = true,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                self.chunked = true;
            }
        }
        State::Headers
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientTarget<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.state == State::PassThrough {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Read straight into the caller's buffer; only what follows a byte that needs
            // escaping is moved aside, escaped, and handed out on the next reads.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = &buf.filled()[start..];
            if read.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let clean = this.scan(read);
            if clean == read.len() {
                return Poll::Ready(Ok(()));
            }
            let rest = read[clean..].to_vec();
            buf.set_filled(start + clean);
            this.transform(&rest);
            if clean > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientTarget<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut l = LenientTarget::new(());
        for c in chunks {
            l.transform(c);
        }
        l.out
    }

    #[test]
    fn escapes_raw_json_in_the_target_only() {
        let req = b"GET /h?data={\"a\":1} HTTP/1.1\r\nX: \"q\"\r\n\r\n";
        let out = run(&[req]);
        assert_eq!(out, b"GET /h?data={%22a%22:1} HTTP/1.1\r\nX: \"q\"\r\n\r\n".to_vec());
    }

    #[test]
    fn bodies_pass_untouched_and_the_next_request_is_escaped() {
        let req = b"POST /h HTTP/1.1\r\nContent-Length: 3\r\n\r\n\"#\"GET /?\" HTTP/1.1\r\n\r\n";
        // Split at every byte to prove the state machine is resumable.
        let chunks: Vec<&[u8]> = req.chunks(1).collect();
        let out = run(&chunks);
        assert_eq!(out, b"POST /h HTTP/1.1\r\nContent-Length: 3\r\n\r\n\"#\"GET /?%22 HTTP/1.1\r\n\r\n".to_vec());
    }

    #[test]
    fn chunked_bodies_switch_to_pass_through() {
        let req = b"POST /h HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\"\r\n0\r\n\r\nGET /?\" H";
        let out = run(&[req]);
        assert_eq!(out, req.to_vec());
    }

    #[test]
    fn spaces_inside_the_target_are_escaped_and_the_version_is_found() {
        let out = run(&[b"GET /h?data={\"a b\": \"c  d\"} HTTP/1.1\r\nX: a b\r\n\r\n"]);
        assert_eq!(out, b"GET /h?data={%22a%20b%22:%20%22c%20%20d%22} HTTP/1.1\r\nX: a b\r\n\r\n".to_vec());
    }

    #[test]
    fn non_ascii_bytes_are_escaped() {
        let out = run(&["GET /?d=é HTTP/1.1\r\n".as_bytes()]);
        assert_eq!(out, b"GET /?d=%C3%A9 HTTP/1.1\r\n".to_vec());
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads everything through the adapter with a small buffer, so escapes straddle reads.
    async fn read_all(input: &'static [u8], buf_size: usize) -> Vec<u8> {
        let mut adapter = LenientTarget::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0u8; buf_size];
        loop {
            let n = adapter.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn reads_escape_targets_whatever_the_buffer_size() {
        let input = b"GET /h?d={\"a\":\"\xc3\xa9\"} HTTP/1.1\r\ncontent-length: 2\r\n\r\n\"\"GET /?<> HTTP/1.1\r\n\r\n";
        let want =
            b"GET /h?d={%22a%22:%22%C3%A9%22} HTTP/1.1\r\ncontent-length: 2\r\n\r\n\"\"GET /?%3C%3E HTTP/1.1\r\n\r\n";
        for size in [1, 2, 3, 7, 64, 8192] {
            assert_eq!(read_all(input, size).await, want.to_vec(), "buffer of {size}");
        }
    }
}
