//! One keep-alive HTTP/1.1 client connection on hyper's low-level `client::conn::http1`:
//! one request at a time, redialled if the server closed it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, Error>;

/// What the load tool needs of a response.
pub struct Reply {
    pub status: StatusCode,
    /// `X-Pollgate-Seq`, present on acknowledged syncs.
    pub seq: Option<u64>,
    pub body: Bytes,
}

pub struct Conn {
    pub addr: SocketAddr,
    host: HeaderValue,
    tx: SendRequest<Full<Bytes>>,
    /// Limit for one request (held polls add their wait to it).
    pub timeout: Duration,
}

async fn dial(addr: SocketAddr, timeout: Duration) -> Res<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| "connect timeout")??;
    stream.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

impl Conn {
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Res<Self> {
        let tx = dial(addr, timeout).await?;
        Ok(Conn { addr, host: HeaderValue::from_str(&addr.to_string())?, tx, timeout })
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
        if self.tx.is_closed() || self.tx.ready().await.is_err() {
            self.tx = dial(self.addr, self.timeout).await?;
        }
        let method = if body.is_some() { Method::POST } else { Method::GET };
        let mut builder = Request::builder().method(method).uri(target).header(HOST, self.host.clone());
        let content = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(content))?;
        let tx = &mut self.tx;
        let exchange = async move {
            let response = tx.send_request(request).await?;
            let status = response.status();
            let seq =
                response.headers().get("x-pollgate-seq").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Error>(Reply { status, seq, body })
        };
        tokio::time::timeout(self.timeout + extra, exchange).await.map_err(|_| -> Error { "request timeout".into() })?
    }
}
