//! One keep-alive HTTP/1.1 client connection, written by hand on a `TcpStream`: one request
//! at a time, redialled if the server closed it.
//!
//! The load tool's own cost sets the pace of every closed-loop test: hyper's client (a
//! connection task, a channel per request, header maps) took about half of its user time,
//! and a server that waits for its load generator pays for sleeping and waking up, which a
//! saturated one does not. So the client does the least HTTP needs: it writes each request
//! with one call and reads the response with `httparse`, with `Content-Length`, chunked or
//! close-delimited bodies.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, Error>;

/// The most a response head may take; a longer one is an error.
const MAX_HEAD: usize = 64 * 1024;
/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 4096;

/// What the load tool needs of a response.
pub struct Reply {
    pub status: StatusCode,
    /// `X-Pollgate-Seq`, present on acknowledged syncs.
    pub seq: Option<u64>,
    pub body: Bytes,
}

pub struct Conn {
    pub addr: SocketAddr,
    /// `Host: …\r\n`, written into every request.
    host_line: String,
    /// `None` after a failure or a `Connection: close`: the next request dials again.
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    input: BytesMut,
    /// The request being written (kept to reuse its allocation).
    output: Vec<u8>,
    /// Limit for one request (held polls add their wait to it).
    pub timeout: Duration,
}

/// How the body of a response is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed response head.
struct Head {
    len: usize,
    status: StatusCode,
    seq: Option<u64>,
    framing: Framing,
    close: bool,
}

async fn dial(addr: SocketAddr, timeout: Duration) -> Res<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| "connect timeout")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Res<Self> {
        let stream = dial(addr, timeout).await?;
        Ok(Conn {
            addr,
            host_line: format!("Host: {addr}\r\n"),
            stream: Some(stream),
            input: BytesMut::new(),
            output: Vec::new(),
            timeout,
        })
    }

    /// Sends one request (a POST of JSON when `body` is given) and reads the whole response;
    /// `extra` lengthens the timeout (for held polls).
    pub async fn request(&mut self, target: &str, body: Option<Bytes>, extra: Duration) -> Res<Reply> {
        let body = body.map(|b| (b, "application/json"));
        self.exchange(target, body, extra).await
    }

    /// POSTs a form body.
    pub async fn request_form(&mut self, target: &str, form: Bytes) -> Res<Reply> {
        self.exchange(target, Some((form, "application/x-www-form-urlencoded")), Duration::ZERO).await
    }

    async fn exchange(&mut self, target: &str, body: Option<(Bytes, &'static str)>, extra: Duration) -> Res<Reply> {
        self.write_request(target, body);
        let result = tokio::time::timeout(self.timeout + extra, self.round_trip()).await;
        let result = result.unwrap_or_else(|_| Err("request timeout".into()));
        if result.is_err() {
            // Whatever the connection holds now (a late response, half a head) is of no use.
            self.stream = None;
        }
        result
    }

    /// The request's bytes in `output`: the head and the body, written with one call.
    fn write_request(&mut self, target: &str, body: Option<(Bytes, &'static str)>) {
        let out = &mut self.output;
        out.clear();
        let method = if body.is_some() { "POST " } else { "GET " };
        out.extend_from_slice(method.as_bytes());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(self.host_line.as_bytes());
        if let Some((bytes, content_type)) = body {
            // Written into the reused buffer: no allocation per request.
            let _ = write!(out, "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", bytes.len());
            out.extend_from_slice(&bytes);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Writes `output` and reads the response. A reused connection that the server closed
    /// before answering a byte is dialled again and the request sent once more: the server
    /// closes only connections it reads nothing more from, so the request never ran.
    async fn round_trip(&mut self) -> Res<Reply> {
        let reused = match &self.stream {
            Some(stream) if !closed_by_peer(stream) => true,
            _ => {
                self.stream = Some(dial(self.addr, self.timeout).await?);
                false
            }
        };
        self.input.clear();
        match self.send_and_read().await {
            Err(e) if reused && self.input.is_empty() && is_closed_error(&*e) => {
                self.stream = Some(dial(self.addr, self.timeout).await?);
                self.send_and_read().await
            }
            result => result,
        }
    }

    async fn send_and_read(&mut self) -> Res<Reply> {
        let stream = self.stream.as_mut().ok_or("not connected")?;
        stream.write_all(&self.output).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.input)? {
                break head;
            }
            if self.input.len() > MAX_HEAD {
                return Err("response head too large".into());
            }
            fill(stream, &mut self.input).await?;
        };
        self.input.advance(head.len);
        let body = match head.framing {
            Framing::Length(len) => {
                while self.input.len() < len {
                    fill(stream, &mut self.input).await?;
                }
                self.input.split_to(len).freeze()
            }
            Framing::Chunked => read_chunked(stream, &mut self.input).await?,
            Framing::UntilClose => loop {
                self.input.reserve(READ_CHUNK);
                if stream.read_buf(&mut self.input).await? == 0 {
                    break self.input.split().freeze();
                }
            },
        };
        // Bytes after the response, or a server that is done with the connection: dial anew.
        if head.close || !self.input.is_empty() || matches!(head.framing, Framing::UntilClose) {
            self.stream = None;
        }
        Ok(Reply { status: head.status, seq: head.seq, body })
    }
}

/// Between two requests the server has nothing to send, so a readable connection is one
/// it closed (or one it broke the protocol on). Asking costs no system call unless the
/// runtime has seen it become readable.
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.readable().now_or_never().is_none() {
        return false;
    }
    let mut probe = [0u8; 1];
    !matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn is_closed_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        )
    })
}

/// Reads more bytes; the end of the stream here is an error (a response is incomplete).
async fn fill(stream: &mut TcpStream, input: &mut BytesMut) -> Res<()> {
    input.reserve(READ_CHUNK);
    if stream.read_buf(input).await? == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}

/// The response head at the start of `input`, once it is all there. Interim (1xx) responses
/// are skipped: the load tool never asks for them.
fn parse_head(input: &[u8]) -> Res<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(input)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let code = response.code.unwrap_or_default();
    if (100..200).contains(&code) {
        return Ok(parse_head(&input[len..])?.map(|head| Head { len: len + head.len, ..head }));
    }
    let status = StatusCode::from_u16(code)?;
    let mut head = Head { len, status, seq: None, framing: Framing::UntilClose, close: false };
    if code == 204 || code == 304 {
        head.framing = Framing::Length(0);
    }
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            head.framing = Framing::Length(value.parse().map_err(|_| "bad Content-Length")?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(format!("unsupported Transfer-Encoding: {value}").into());
            }
            head.framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if header.name.eq_ignore_ascii_case("x-pollgate-seq") {
            head.seq = value.parse().ok();
        }
    }
    if response.version == Some(0) {
        head.close = true;
    }
    Ok(Some(head))
}

/// A chunked body, decoded; trailers are read and dropped.
async fn read_chunked(stream: &mut TcpStream, input: &mut BytesMut) -> Res<Bytes> {
    let mut body = Vec::new();
    loop {
        let (start, size) = loop {
            match httparse::parse_chunk_size(input).map_err(|_| "bad chunk size")? {
                httparse::Status::Complete((start, size)) => break (start, size as usize),
                httparse::Status::Partial => fill(stream, input).await?,
            }
        };
        if size == 0 {
            input.advance(start);
            // Trailers, up to the empty line that ends them.
            loop {
                if let Some(end) = input.windows(2).position(|w| w == b"\r\n") {
                    input.advance(end + 2);
                    if end == 0 {
                        return Ok(body.into());
                    }
                } else {
                    fill(stream, input).await?;
                }
            }
        }
        while input.len() < start + size + 2 {
            fill(stream, input).await?;
        }
        body.extend_from_slice(&input[start..start + size]);
        if &input[start + size..start + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        input.advance(start + size + 2);
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    /// What the scripted server does with the next request it reads.
    enum Step {
        /// Writes these bytes.
        Answer(&'static str),
        /// Writes these bytes, then closes the connection.
        AnswerAndClose(&'static str),
        /// Closes the connection without answering.
        Close,
        /// Never answers (keeps the connection open).
        Silent,
    }

    /// A loopback server that runs `steps`, one per request, on whichever connection the
    /// request comes; it answers with the requests it read, each with its connection's number.
    async fn scripted_server(steps: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<(usize, String)>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut seen, mut held, mut number) = (Vec::new(), Vec::new(), 0);
            let mut steps = steps.into_iter().peekable();
            'accept: while steps.peek().is_some() {
                let (mut stream, _) = listener.accept().await.unwrap();
                number += 1;
                while let Some(request) = read_request(&mut stream).await {
                    seen.push((number, request));
                    match steps.next() {
                        Some(Step::Answer(bytes)) => stream.write_all(bytes.as_bytes()).await.unwrap(),
                        Some(Step::AnswerAndClose(bytes)) => {
                            stream.write_all(bytes.as_bytes()).await.unwrap();
                            continue 'accept;
                        }
                        Some(Step::Close) => continue 'accept,
                        Some(Step::Silent) => {
                            held.push(stream);
                            continue 'accept;
                        }
                        None => break 'accept,
                    }
                }
            }
            seen
        });
        (addr, task)
    }

    /// One request (head and `Content-Length` body) as text; `None` when the client closed.
    async fn read_request(stream: &mut TcpStream) -> Option<String> {
        let mut input = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&input) {
                let body = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
                let body: usize = body.map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse().unwrap());
                if input.len() >= len + body {
                    return Some(String::from_utf8(input).unwrap());
                }
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => input.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn text(reply: &Reply) -> &str {
        std::str::from_utf8(&reply.body).unwrap()
    }

    #[tokio::test]
    async fn reads_length_chunked_and_empty_bodies_on_one_connection() {
        let (addr, server) = scripted_server(vec![
            Step::Answer(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pollgate-Seq: 7\r\n\r\nhello",
            ),
            Step::Answer(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=1\r\ndefg\r\n0\r\nT: 1\r\n\r\n",
            ),
            Step::Answer("HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let mut conn = Conn::open(addr, Duration::from_secs(5)).await.unwrap();
        let first = conn.request("/a?x=1", None, Duration::ZERO).await.unwrap();
        assert_eq!((first.status, first.seq, text(&first)), (StatusCode::OK, Some(7), "hello"));
        let second = conn.request("/b", Some(Bytes::from_static(b"{\"k\":1}")), Duration::ZERO).await.unwrap();
        assert_eq!((second.seq, text(&second)), (None, "abcdefg"));
        let third = conn.request("/c", None, Duration::ZERO).await.unwrap();
        assert_eq!((third.status, text(&third)), (StatusCode::NO_CONTENT, ""));
        drop(conn);
        let seen = server.await.unwrap();
        assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 1, 1], "one connection for all");
        assert_eq!(seen[0].1, format!("GET /a?x=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
        assert_eq!(
            seen[1].1,
            format!("POST /b HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{{\"k\":1}}")
        );
    }

    #[tokio::test]
    async fn dials_again_when_the_server_closes_the_connection() {
        let ok = |body| format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{body}").leak() as &'static str;
        let (addr, server) = scripted_server(vec![
            Step::AnswerAndClose(ok("a")),
            Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb"),
            Step::Answer(ok("c")),
            Step::Close,
            Step::Answer(ok("d")),
        ])
        .await;
        let mut conn = Conn::open(addr, Duration::from_secs(5)).await.unwrap();
        let mut bodies = Vec::new();
        for pause in [50, 0, 0, 0] {
            bodies.push(text(&conn.request("/", None, Duration::ZERO).await.unwrap()).to_owned());
            // Lets the runtime see the server's close before the next request.
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        drop(conn);
        assert_eq!(bodies, ["a", "b", "c", "d"]);
        // Closed after "a" and after "b" (`Connection: close`): new connections; the
        // request that met the close without an answer is sent again on a new connection.
        let numbers: Vec<usize> = server.await.unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 3, 4]);
    }

    #[tokio::test]
    async fn a_response_that_never_comes_times_out_and_the_next_request_dials_again() {
        let (addr, server) =
            scripted_server(vec![Step::Silent, Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]).await;
        let mut conn = Conn::open(addr, Duration::from_millis(300)).await.unwrap();
        let error = conn.request("/", None, Duration::ZERO).await.err().expect("no answer: an error");
        assert_eq!(error.to_string(), "request timeout");
        assert_eq!(text(&conn.request("/", None, Duration::ZERO).await.unwrap()), "ok");
        drop(conn);
        let numbers: Vec<usize> = server.await.unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2]);
    }

    #[test]
    fn response_heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none(), "incomplete");
        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(head.close && matches!(head.framing, Framing::UntilClose), "HTTP/1.0 without a length");
        let head = parse_head(b"HTTP/1.1 304 Not Modified\r\nConnection: Close\r\n\r\n").unwrap().unwrap();
        assert!(head.close && matches!(head.framing, Framing::Length(0)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
    }
}
