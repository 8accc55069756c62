//! Writing a response on the wire: the status line, the response's headers, its framing
//! (`content-length`, or chunked for a body of unknown length) and `date`, then the body,
//! gathered into as few writes as it can.

use std::io::{self, Write as _};

use bytes::Buf;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::http::body::Body;

/// Room for a response head: the status line and the few headers the endpoint answers.
const HEAD_SIZE: usize = 512;
/// A response body up to this size is written with the head, in one write.
const GATHER_BODY: usize = 16 * 1024;

/// How a response goes out.
#[derive(Clone, Copy, Default)]
pub struct Manner {
    /// The connection closes after it (`connection: close`).
    pub close: bool,
    /// The answer to a HEAD: the head of the GET's answer, without its body.
    pub head_only: bool,
    /// The request was HTTP/1.0: no chunked framing (a body of unknown length ends with the
    /// connection, which closes after every HTTP/1.0 request).
    pub http10: bool,
}

/// Writes `resp`: status line, the response's headers, `content-length` (or chunked framing
/// for a body of unknown length), `date`, then the body (none for a HEAD).
pub async fn write<S>(io: &mut S, resp: Response<Body>, manner: Manner) -> io::Result<()>
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
            // A HEAD's answer says nothing of a length it does not know; an HTTP/1.0 client
            // reads to the end of the connection.
            None if manner.head_only || manner.http10 => {}
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    if manner.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    date::write(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    if bodiless || manner.head_only {
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
