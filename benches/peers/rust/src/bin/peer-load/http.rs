//! A minimal HTTP/1.1 client for the load tool: one keep-alive connection, one request at a
//! time, the request written in one `write`, the answer's head read with httparse and its
//! body by `Content-Length`. The peers answer every request of the benchmark that way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every error of the tool is reported as text in its result line.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One connection to the server under test.
pub struct Conn {
    stream: TcpStream,
    /// Read bytes not yet consumed: a response may arrive in several reads.
    input: Vec<u8>,
    /// The request being written, reused so that a request allocates nothing.
    output: Vec<u8>,
    /// The time a short request may take; a held poll passes its own.
    timeout: Duration,
}

impl Conn {
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Res<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, input: Vec::with_capacity(4096), output: Vec::with_capacity(512), timeout })
    }

    pub async fn get(&mut self, target: &str) -> Res<(u16, Vec<u8>)> {
        self.request("GET", target, None, None).await
    }

    /// Sends one request and reads its answer: the status and the body. `wait` replaces the
    /// connection's timeout (a long-poll is held by the server on purpose).
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
        wait: Option<Duration>,
    ) -> Res<(u16, Vec<u8>)> {
        let limit = wait.unwrap_or(self.timeout);
        tokio::time::timeout(limit, self.exchange(method, target, body))
            .await
            .map_err(|_| format!("{method} {target}: no answer within {limit:?}"))?
    }

    async fn exchange(&mut self, method: &str, target: &str, body: Option<&[u8]>) -> Res<(u16, Vec<u8>)> {
        use std::io::Write;
        self.output.clear();
        write!(self.output, "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
        if let Some(body) = body {
            write!(self.output, "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n", body.len())?;
        }
        self.output.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.output.extend_from_slice(body);
        }
        self.stream.write_all(&self.output).await?;

        // The head: read until httparse has all of it.
        let (status, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&self.input)? {
                let status = response.code.unwrap_or(0);
                let mut body_len = None;
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        body_len = Some(std::str::from_utf8(header.value)?.trim().parse::<usize>()?);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err("a chunked answer: the peers send Content-Length".into());
                    }
                }
                break (status, head_len, body_len.unwrap_or(0));
            }
            self.fill().await?;
        };
        while self.input.len() < head_len + body_len {
            self.fill().await?;
        }
        let body = self.input[head_len..head_len + body_len].to_vec();
        self.input.drain(..head_len + body_len);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Res<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        self.input.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
