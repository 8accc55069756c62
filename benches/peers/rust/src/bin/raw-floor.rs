//! The HTTP floor without hyper: what one keep-alive HTTP/1.1 request costs here when the
//! server's HTTP layer is a loop written by hand. A measuring instrument for
//! docs/PERFORMANCE.md, not part of pollgate, built with the peers (scripts/bench-compare.sh).
//!
//! It answers what the peers' bare hyper server (`hyper-baseline`) answers, byte for byte
//! but the date: `200 {"ok":true}` as `application/json`, on keep-alive connections. It
//! reads request heads only (GETs without a body, as the peers' `loadgen floor` sends them)
//! and checks nothing in them. Comparing its server CPU per request with hyper-baseline's, in
//! the same session on the same pinned cores, tells how much of a request's cost an HTTP/1.1
//! layer of pollgate's own could save:
//!
//! ```text
//! ./scripts/bench-compare.sh one rawfloor --duration 5 --warmup 1 floor -c 64
//! ./scripts/bench-compare.sh one baseline --duration 5 --warmup 1 floor -c 64
//! ```
//!
//! Env: `PORT` (default 3004). Listens on 127.0.0.1 only.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// hyper-baseline's response, with a fixed date (hyper writes the current one; the length is
/// the same).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\
date: Thu, 03 Dec 2026 09:40:00 GMT\r\n\r\n{\"ok\":true}";

/// A connection whose request head does not fit is closed.
const BUFFER: usize = 8192;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3004);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("raw floor listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

/// Answers every complete request head in what has been read, with one write for all of
/// them, until the client closes.
async fn serve(mut stream: TcpStream) {
    let end_of_head = memchr::memmem::Finder::new(b"\r\n\r\n");
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0;
    let mut out = Vec::with_capacity(RESPONSE.len());
    loop {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        let mut start = 0;
        while let Some(at) = end_of_head.find(&buf[start..len]) {
            start += at + 4;
            out.extend_from_slice(RESPONSE);
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == BUFFER {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
