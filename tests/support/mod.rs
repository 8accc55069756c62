//! Test helpers: start the real `pollgate` binary on a loopback port and speak raw HTTP/1.1
//! to it, so tests control every byte (raw JSON in query strings, odd headers).
#![allow(dead_code)]

pub mod cluster;
pub mod faults;
pub mod redis_cluster;
pub mod two_way;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root (where `conf/` and `static/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running pollgate process, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// Scratch folder for this server (fs_root lives here).
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts with the shipped configuration on 127.0.0.1, any free port, no HTTPS, and
    /// `env` as extra `POLLGATE_*` overrides (`("TIMEOUT", "0.05")`).
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_args(env, &[])
    }

    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs_root = dir.path().join("fs");
        std::fs::create_dir_all(fs_root.join("public")).unwrap();
        std::fs::create_dir_all(fs_root.join("private/guest")).unwrap();
        std::fs::create_dir_all(fs_root.join("private/root")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollgate"));
        cmd.current_dir(repo())
            .env("POLLGATE_PORT", "0")
            .env("POLLGATE_SSLPORT", "0")
            .env("POLLGATE_BIND_ADDRESS", "127.0.0.1")
            .env("POLLGATE_FS_ROOT", &fs_root)
            .env("POLLGATE_LOG_LEVEL", "debug")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The test command runs the suite three times: the second time every server keeps
        // its state in the Redis at TEST_REDIS_URL, the third in the Redis Cluster of
        // TEST_REDIS_CLUSTER_NODES, under a prefix of its own.
        if !env.iter().any(|(k, _)| *k == "STORE") {
            let prefix: u64 = rand::random();
            if let Ok(seeds) = std::env::var("TEST_REDIS_CLUSTER_NODES") {
                cmd.env("POLLGATE_STORE", "redis")
                    .env("POLLGATE_REDIS_CLUSTER_NODES", seeds)
                    .env("POLLGATE_REDIS_PREFIX", format!("t{prefix:016x}:"));
            } else if let Ok(url) = std::env::var("TEST_REDIS_URL") {
                cmd.env("POLLGATE_STORE", "redis")
                    .env("POLLGATE_REDIS_URL", url)
                    .env("POLLGATE_REDIS_PREFIX", format!("t{prefix:016x}:"));
            }
        }
        for (k, v) in env {
            cmd.env(format!("POLLGATE_{k}"), v);
        }
        let mut child = cmd.spawn().expect("start pollgate");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(addr) = line.strip_prefix("pollgate listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("pollgate did not start: {}", log.lock().unwrap());
        });
        let tls_addr = rx.recv_timeout(Duration::from_millis(300)).ok();
        Server { child: Some(child), addr, tls_addr, log, dir }
    }

    /// The server's process id (for tools that read its CPU and memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Lowers the running server's descriptor limit (soft and hard) to `n`, with util-linux's
    /// `prlimit`.
    pub fn limit_descriptors(&self, n: u64) {
        let limit = format!("--nofile={n}:{n}");
        let status = Command::new("prlimit").args(["--pid", &self.pid().to_string(), &limit]).status();
        assert!(status.as_ref().is_ok_and(|s| s.success()), "prlimit (util-linux) failed: {status:?}");
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of the sample `name` (with its labels, as printed) in a scrape of the
    /// server's metrics; fails the test when it is missing.
    pub fn metric(&self, name: &str) -> f64 {
        let text = get(self.addr, "/jWebSocket/metrics").text();
        metric_sample(&text, name).unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    pub fn fs_root(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    /// A client with a fresh random connection id.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// SIGKILL, as `kill -9`: no shutdown, in-flight requests are cut.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- server log ({})\n{}", self.addr, self.log.lock().unwrap());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A sync body: the packets as strings.
    pub fn packets(&self) -> Vec<String> {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not a sync body ({e}): {}", self.text()))
    }
}

/// Sends raw bytes, reads the response to EOF (`Connection: close` is the caller's job).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Response {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// The whole responses at the start of `buf`, read back to back from one connection (each
/// framed by its `Content-Length`, or bodiless); an incomplete last one is left out.
pub fn split_responses(mut buf: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = parse_response(&buf[..end + 4]);
        let length: usize = head.header("content-length").map_or(0, |v| v.parse().unwrap());
        if buf.len() < end + 4 + length {
            break;
        }
        out.push(parse_response(&buf[..end + 4 + length]));
        buf = &buf[end + 4 + length..];
    }
    out
}

/// Sends raw bytes from the local address `source` (a second loopback address).
pub fn raw_from(source: IpAddr, addr: SocketAddr, request: &[u8]) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).expect("bind a second loopback address");
        let mut s = socket.connect(addr).await.expect("connect");
        assert_eq!(s.local_addr().unwrap().ip(), source);
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        parse_response(&buf)
    })
}

pub fn get_from(source: IpAddr, addr: SocketAddr, target: &str) -> Response {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_from(source, addr, req.as_bytes())
}

/// GET with the request target exactly as given (raw JSON allowed).
pub fn get(addr: SocketAddr, target: &str) -> Response {
    get_with(addr, target, &[])
}

pub fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes())
}

/// POST `body` with a content type.
pub fn post(addr: SocketAddr, target: &str, content_type: &str, body: &[u8]) -> Response {
    post_with(addr, target, &[("Content-Type", content_type)], body)
}

pub fn post_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut req =
        format!("POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

/// Events off, so that queues hold only what a test sends.
pub const NO_EVENTS: &[(&str, &str)] = &[
    ("BROADCAST_OPEN_EVENT", "false"),
    ("BROADCAST_CLOSE_EVENT", "false"),
    ("BROADCAST_LOGIN_EVENT", "false"),
    ("BROADCAST_LOGOUT_EVENT", "false"),
];

pub const ENDPOINT: &str = "/jWebSocket/http";

/// The value of one sample of a metrics scrape (`name` with its labels, as printed), if present.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Percent-encodes a form or query value.
pub fn enc(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One jWebSocket REST client: a connection id and the requests of the protocol.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub connection_id: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let id: u128 = rand::random();
        Client { addr, connection_id: format!("{id:032x}") }
    }

    /// `GET {endpoint}?connectionId=…&{query}` with the query as given.
    pub fn get(&self, query: &str) -> Response {
        get(self.addr, &format!("{ENDPOINT}?connectionId={}&{query}", self.connection_id))
    }

    /// Form POST of `connectionId` plus `pairs` (values encoded).
    pub fn post(&self, pairs: &[(&str, &str)]) -> Response {
        let mut body = format!("connectionId={}", self.connection_id);
        for (k, v) in pairs {
            body.push_str(&format!("&{k}={}", enc(v)));
        }
        post(self.addr, ENDPOINT, "application/x-www-form-urlencoded", body.as_bytes())
    }

    /// Opens and drains the welcome; returns this connector's `sourceId`.
    pub fn open(&self) -> String {
        self.open_with("")
    }

    pub fn open_with(&self, extra: &str) -> String {
        let r = self.get(&format!("action=open{extra}"));
        assert_eq!(r.status, 200, "open: {}", r.text());
        let packets = self.sync().packets();
        let welcome: serde_json::Value = serde_json::from_str(&packets[0]).unwrap();
        assert_eq!(welcome["type"], "welcome");
        welcome["sourceId"].as_str().unwrap().to_owned()
    }

    pub fn sync(&self) -> Response {
        self.get("action=sync")
    }

    /// Sends a token (as raw JSON in the query string); returns the response.
    pub fn send(&self, token: &serde_json::Value) -> Response {
        self.get(&format!("action=send&data={token}"))
    }

    /// Sends a system-plugin token of `kind` with extra fields.
    pub fn system(&self, kind: &str, fields: serde_json::Value) -> serde_json::Value {
        let mut token = serde_json::json!({"ns": "org.jwebsocket.plugins.system", "type": kind});
        if let serde_json::Value::Object(extra) = fields {
            token.as_object_mut().unwrap().extend(extra);
        }
        let r = self.post(&[("action", "send"), ("data", &token.to_string())]);
        assert_eq!(r.status, 200, "{}", r.text());
        if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            r.json()
        }
    }

    pub fn login(&self, user: &str, password: &str) -> serde_json::Value {
        let r = self.post(&[("action", "login"), ("username", user), ("password", password)]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Syncs until at least `n` packets arrived (long-polling), parsed as JSON.
    pub fn collect(&self, n: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let start = Instant::now();
        while out.len() < n && start.elapsed() < Duration::from_secs(20) {
            for p in self.get("action=sync&wait=2000").packets() {
                out.push(serde_json::from_str(&p).unwrap_or(serde_json::Value::String(p)));
            }
        }
        out
    }
}

/// Writes a file, making its folders.
pub fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A shared poll (docs/PROTOCOL.md, "Shared poll") sent to `addr` as a form POST by `by`
/// (its connection id in the header), carrying each client's connector with its `ack`.
pub fn shared_poll(addr: SocketAddr, by: &Client, carried: &[(&Client, u64)], wait: u64) -> Response {
    let share: Vec<serde_json::Value> =
        carried.iter().map(|(c, ack)| serde_json::json!({"connectionId": c.connection_id, "ack": ack})).collect();
    let share = serde_json::Value::Array(share).to_string();
    shared_poll_raw(addr, by, &format!("action=sync&wait={wait}&share={}", enc(&share)))
}

/// A shared poll with the form body exactly as given.
pub fn shared_poll_raw(addr: SocketAddr, by: &Client, body: &str) -> Response {
    let headers =
        [("Content-Type", "application/x-www-form-urlencoded"), ("X-Pollgate-Connection", by.connection_id.as_str())];
    post_with(addr, ENDPOINT, &headers, body.as_bytes())
}

/// The connectors of a shared poll's answer, in the order of the request.
pub fn carried(r: &Response) -> Vec<serde_json::Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["connectors"].as_array().unwrap_or_else(|| panic!("no connectors in {}", r.text())).clone()
}
