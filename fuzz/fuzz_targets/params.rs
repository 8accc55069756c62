//! Fuzz target `params`: the bytes of a client's request, through the lenient request-target
//! adapter (`pollgate::lenient`) as the server reads them, and through the query/form
//! parameter parser (`pollgate::params`).
//!
//! Beyond "no panic, no hang" it checks what the two promise: the adapter only replaces a
//! byte of its escape set by that byte's `%XX`, gives the same bytes however the stream is
//! cut into reads (except where its documented 5-byte look-ahead after a space is cut short),
//! and leaves a first request target that the `http` crate accepts; the parser keeps the
//! first value of a name, and decodes what the Rust client percent-encodes back to the text.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use pollgate::fuzzing::client_form_value;
use pollgate::lenient::LenientTarget;
use pollgate::params::{decode, Params};
use tokio::io::{AsyncRead, ReadBuf};

/// A client stream held in memory that hands `input` out in reads of at most `chunk` bytes,
/// like TCP segments that end anywhere.
struct Segments<'a> {
    input: &'a [u8],
    pos: usize,
    chunk: usize,
    /// A read ended within 5 bytes after a space: the adapter then decides whether the
    /// space ends the target without seeing `HTTP/` (documented), so the output may differ
    /// from that of one whole read.
    blind_cut: bool,
}

impl AsyncRead for Segments<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let left = self.input.len() - self.pos;
        let room = buf.remaining().min(left);
        let mut n = self.chunk.min(room);
        // Move the cut past the look-ahead window of a space when the caller's buffer lets
        // us; otherwise note that this read is one the adapter may answer differently.
        let blind = |cut: usize| cut < self.input.len() && self.input[cut.saturating_sub(5)..cut].contains(&b' ');
        while n < room && blind(self.pos + n) {
            n += 1;
        }
        if n > 0 && blind(self.pos + n) {
            self.blind_cut = true;
        }
        let start = self.pos;
        buf.put_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Reads the whole of `input` through the adapter, `buf_size` bytes at most per read.
fn through_adapter(input: &[u8], chunk: usize, buf_size: usize) -> (Vec<u8>, bool) {
    let mut stream = Segments { input, pos: 0, chunk, blind_cut: false };
    let mut adapter = LenientTarget::new(&mut stream);
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = vec![0u8; buf_size];
    let mut out = Vec::new();
    // Every read hands out at least one byte and the output is at most three bytes per
    // input byte: more reads than that is a loop that would hang a connection.
    let max_reads = 3 * input.len() + 2;
    for _ in 0..max_reads {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut adapter).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                drop(adapter);
                return (out, stream.blind_cut);
            }
            Poll::Ready(Ok(())) => out.extend_from_slice(read.filled()),
            other => panic!("the adapter over an in-memory stream answered {other:?}"),
        }
    }
    panic!("the adapter did not reach the end of {} bytes in {max_reads} reads", input.len());
}

/// Whether the adapter may escape `byte` (its escape set, plus a space inside a target).
fn escapable(byte: u8) -> bool {
    matches!(byte, b'"' | b'#' | b'<' | b'>' | b'`' | b' ' | 0x7f..=0xff)
}

/// Checks that `out` is `input` with some escapable bytes replaced by their `%XX`.
fn assert_only_escapes(input: &[u8], out: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let (mut i, mut j) = (0, 0);
    while i < input.len() {
        let b = input[i];
        if out.get(j) == Some(&b) {
            j += 1;
        } else {
            let escape = [b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
            assert!(escapable(b), "byte {b:#04x} at {i} was changed but is not in the escape set");
            assert_eq!(out.get(j..j + 3), Some(&escape[..]), "byte {b:#04x} at {i} was not escaped as %XX");
            j += 3;
        }
        i += 1;
    }
    assert_eq!(j, out.len(), "the adapter added bytes after the input's end");
}

/// The first request line's target, if the line has the `METHOD SP /TARGET SP HTTP/x`
/// shape and only visible ASCII in the target: `http` must accept it after the adapter.
fn assert_first_target_accepted(out: &[u8]) {
    let line = out.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else { return };
    let shaped = !method.is_empty()
        && method.iter().all(u8::is_ascii_alphabetic)
        && version.starts_with(b"HTTP/")
        && target.first() == Some(&b'/')
        && target.iter().all(|b| (0x21..0x7f).contains(b));
    if shaped {
        if let Err(e) = http::Uri::try_from(target) {
            panic!("the adapter let through a target http refuses: {:?}: {e}", String::from_utf8_lossy(target));
        }
    }
}

fn check_params(data: &[u8]) {
    let params = Params::parse(data);
    // The first occurrence of every name wins, with both sides decoded.
    let mut seen = std::collections::HashSet::new();
    for part in data.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let name = decode(name);
        if seen.insert(name.clone()) {
            assert_eq!(params.get(&name), Some(decode(value).as_str()), "value of {name:?}");
        }
    }
    // Query then form body: the same as one string joined by `&`, the query first.
    if let Some(cut) = data.iter().position(|b| *b == b'&') {
        let mut split = Params::parse(&data[..cut]);
        split.extend(&data[cut + 1..]);
        for name in &seen {
            assert_eq!(split.get(name), params.get(name), "extend changed {name:?}");
        }
    }
    // What the Rust client encodes, the server decodes back to the text (as UTF-8, with
    // U+FFFD for what is not).
    let text = String::from_utf8_lossy(data);
    assert_eq!(decode(client_form_value(&text).as_bytes()), text);
    if !data.contains(&b'%') && !data.contains(&b'+') {
        assert_eq!(decode(data), text, "decode changed bytes that are not escapes");
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, blind) = through_adapter(data, usize::MAX, 64 * 1024);
    assert!(!blind, "one read cannot be cut short");
    assert_only_escapes(data, &whole);
    assert_first_target_accepted(&whole);
    // Byte by byte into a small buffer, odd sizes, and a buffer smaller than a read.
    for (chunk, buf_size) in [(1, 8), (3, 16), (7, 5), (1000, 64)] {
        let (split, blind) = through_adapter(data, chunk, buf_size);
        if !blind {
            assert!(split == whole, "reads of {chunk} into a buffer of {buf_size} changed the output");
        }
    }
    check_params(data);
    // The query of a request line, as the server hands it to the parser.
    if let Some(q) = data.iter().position(|b| *b == b'?') {
        let rest = &data[q + 1..];
        let end = rest.iter().position(|b| matches!(b, b' ' | b'\r' | b'\n')).unwrap_or(rest.len());
        check_params(&rest[..end]);
    }
});
