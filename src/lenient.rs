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
use std::task::{Context, Poll};

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
            out: Vec::with_capacity(1024),
            out_pos: 0,
            line: Vec::new(),
            content_length: 0,
            chunked: false,
        }
    }

    /// Bytes the `http` crate refuses in a path or query.
    fn needs_escape(byte: u8) -> bool {
        matches!(byte, b'"' | b'#' | b'<' | b'>' | b'`' | 0x7f..=0xff)
    }

    /// Runs `input` through the state machine, appending the result to `self.out`.
    fn transform(&mut self, input: &[u8]) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::PassThrough => {
                    self.out.extend_from_slice(&input[i..]);
                    return;
                }
                State::Body(left) => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    self.out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::Method } else { State::Body(left) };
                }
                State::Method => {
                    let b = input[i];
                    self.out.push(b);
                    if b == b' ' {
                        self.state = State::Target;
                    }
                    i += 1;
                }
                State::Target => {
                    let b = input[i];
                    if b == b' ' || b == b'\r' || b == b'\n' {
                        self.out.push(b);
                        self.state = if b == b'\n' { self.start_headers() } else { State::Version };
                    } else if Self::needs_escape(b) {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        self.out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                    } else {
                        self.out.push(b);
                    }
                    i += 1;
                }
                State::Version => {
                    let b = input[i];
                    self.out.push(b);
                    if b == b'\n' {
                        self.state = self.start_headers();
                    }
                    i += 1;
                }
                State::Headers => {
                    let b = input[i];
                    self.out.push(b);
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() < MAX_HEADER_LINE {
                            self.line.push(b);
                        }
                        continue;
                    }
                    self.state = self.end_header_line();
                }
            }
        }
    }

    fn start_headers(&mut self) -> State {
        self.line.clear();
        self.content_length = 0;
        self.chunked = false;
        State::Headers
    }

    /// Interprets the header line just completed; returns the next state.
    fn end_header_line(&mut self) -> State {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            return if self.chunked {
                State::PassThrough
            } else if self.content_length > 0 {
                State::Body(self.content_length)
            } else {
                State::Method
            };
        }
        if let Some((name, value)) = text.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") {
                // hyper rejects a bad value; if it did not, pass through to stay safe.
                match value.trim().parse() {
                    Ok(n) => self.content_length = n,
                    Err(_) => self.chunked = true,
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                self.chunked = true;
            }
        }
        self.line = line;
        self.line.clear();
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
            let mut raw = [0u8; 8192];
            let mut raw_buf = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw_buf) {
                Poll::Ready(Ok(())) => {
                    let filled = raw_buf.filled();
                    if filled.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    let filled = filled.to_vec();
                    this.transform(&filled);
                }
                other => return other,
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
    fn non_ascii_bytes_are_escaped() {
        let out = run(&["GET /?d=é HTTP/1.1\r\n".as_bytes()]);
        assert_eq!(out, b"GET /?d=%C3%A9 HTTP/1.1\r\n".to_vec());
    }
}
