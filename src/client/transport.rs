//! One keep-alive HTTP/1.1 connection to the endpoint on hyper's low-level
//! `client::conn::http1`: one request at a time, redialled after any failure. The request
//! pipeline and the long-poll each own one, so a held poll never delays a request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, DATE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::clock::Clock;
use super::Error;

/// The header that carries the connection id (docs/PROTOCOL.md, "Headers"), so the secret never
/// appears in a URL.
const HEADER_CONNECTION: &str = "x-pollgate-connection";
/// The sequence number of the last packet of a sync body (acknowledged sync).
const HEADER_SEQ: &str = "x-pollgate-seq";
/// Why the server closed the connector, on the sync that delivers `http.command.close`.
const HEADER_CLOSE_REASON: &str = "x-pollgate-close-reason";

/// Where the endpoint is and who we are; shared by both connections of a session.
pub(crate) struct Endpoint {
    /// `host:port` to dial.
    authority: String,
    /// The `Host` header (the authority as the base URL wrote it).
    host: HeaderValue,
    /// The endpoint's path, e.g. `/jWebSocket/http`.
    path: String,
    /// `X-Pollgate-Connection`: the connection id, marked sensitive so that hyper never
    /// shows it in debug output.
    connection: HeaderValue,
}

impl Endpoint {
    /// Parses a base URL (`http://HOST[:PORT]/PATH`). Only plain HTTP: `https` is refused
    /// (put a TLS-terminating proxy in between, or extend the dialler).
    pub(crate) fn new(base_url: &str, connection_id: &str) -> Result<Endpoint, Error> {
        let uri: Uri = base_url.parse().map_err(|e| Error::Config(format!("invalid base URL {base_url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(Error::Config("https is not supported by this client: use http".into())),
            _ => return Err(Error::Config(format!("the base URL {base_url:?} must start with http://"))),
        }
        let host = uri.host().ok_or_else(|| Error::Config(format!("the base URL {base_url:?} has no host")))?;
        let port = uri.port_u16().unwrap_or(80);
        // An IPv6 literal keeps its brackets in `host()`, as `connect` wants it.
        let authority = format!("{host}:{port}");
        let host_header = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        if uri.query().is_some() {
            return Err(Error::Config("the base URL must not have a query".into()));
        }
        let mut connection = HeaderValue::from_str(connection_id)
            .map_err(|_| Error::Config("the connection id must be printable ASCII".into()))?;
        connection.set_sensitive(true);
        Ok(Endpoint {
            host: HeaderValue::from_str(host_header).map_err(|e| Error::Config(format!("invalid host: {e}")))?,
            authority,
            path: uri.path().to_owned(),
            connection,
        })
    }
}

/// What the client needs of a response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// `X-Pollgate-Seq`, present on every sync.
    pub seq: Option<u64>,
    /// `X-Pollgate-Close-Reason`, present when the body delivers the close command.
    pub close_reason: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection, owned by one task (the pipeline or the poller).
pub(crate) struct Transport {
    endpoint: Arc<Endpoint>,
    /// The open connection; `None` after a failure, so the next request dials again.
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Every response's `Date` feeds the session's clock-offset estimate.
    clock: Arc<Clock>,
}

impl Transport {
    pub(crate) fn new(endpoint: Arc<Endpoint>, clock: Arc<Clock>) -> Transport {
        Transport { endpoint, conn: None, clock }
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let connect = TcpStream::connect(&self.endpoint.authority);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Transport("connect timed out".into()))?
            .map_err(|e| Error::Transport(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        // The connection's I/O driver; it ends when `tx` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(tx)
    }

    /// POSTs a form body (`action=...&...`) to the endpoint.
    pub(crate) async fn post_form(&mut self, form: String) -> Result<Reply, Error> {
        self.exchange(None, Bytes::from(form), "application/x-www-form-urlencoded").await
    }

    /// POSTs a token as the raw body, with `query` (never secret) in the request target.
    pub(crate) async fn post_token(&mut self, query: &str, token: Bytes) -> Result<Reply, Error> {
        self.exchange(Some(query), token, "application/json").await
    }

    /// One request and its whole response. Not cancel-safe in the sense that a cancelled
    /// call leaves the connection mid-request: the caller then drops it (`reset`).
    async fn exchange(&mut self, query: Option<&str>, body: Bytes, content_type: &'static str) -> Result<Reply, Error> {
        let mut tx = match self.conn.take() {
            Some(mut tx) if !tx.is_closed() => match tx.ready().await {
                Ok(()) => tx,
                Err(_) => self.dial().await?,
            },
            _ => self.dial().await?,
        };
        let target = match query {
            Some(q) => format!("{}?{q}", self.endpoint.path),
            None => self.endpoint.path.clone(),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(target)
            .header(HOST, self.endpoint.host.clone())
            .header(HEADER_CONNECTION, self.endpoint.connection.clone())
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| Error::Protocol(format!("cannot build a request: {e}")))?;
        let sent_at = SystemTime::now();
        let response = tx.send_request(request).await.map_err(|e| Error::Transport(e.to_string()))?;
        let received_at = SystemTime::now();
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let seq = header(HEADER_SEQ).and_then(|v| v.parse().ok());
        let close_reason = header(HEADER_CLOSE_REASON);
        if let Some(date) = response.headers().get(DATE).and_then(|v| v.to_str().ok()) {
            if let Ok(date) = httpdate::parse_http_date(date) {
                self.clock.observe(date, sent_at, received_at);
            }
        }
        let body = response.into_body().collect().await.map_err(|e| Error::Transport(e.to_string()))?.to_bytes();
        // Only a connection whose exchange completed is kept for the next request.
        self.conn = Some(tx);
        Ok(Reply { status, seq, close_reason, body })
    }

    /// Forgets the connection (after a timeout cut a request short).
    pub(crate) fn reset(&mut self) {
        self.conn = None;
    }
}

/// Percent-encodes a form value (everything but unreserved characters).
pub(crate) fn form_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long a TCP connect may take before the attempt counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let e = Endpoint::new("http://127.0.0.1:8787/jWebSocket/http", "abc").unwrap();
        assert_eq!(e.authority, "127.0.0.1:8787");
        assert_eq!(e.path, "/jWebSocket/http");
        let e = Endpoint::new("http://localhost/x/http", "abc").unwrap();
        assert_eq!(e.authority, "localhost:80");
        assert_eq!(e.host, "localhost");
        assert!(matches!(Endpoint::new("https://h/x", "abc"), Err(Error::Config(_))));
        assert!(matches!(Endpoint::new("ftp://h/x", "abc"), Err(Error::Config(_))));
        assert!(matches!(Endpoint::new("http://h/x?connectionId=1", "abc"), Err(Error::Config(_))));
        assert!(matches!(Endpoint::new("http://h/x", "a\nb"), Err(Error::Config(_))));
    }

    #[test]
    fn encodes_form_values() {
        assert_eq!(form_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_value("guest-1_2.3~"), "guest-1_2.3~");
    }
}
