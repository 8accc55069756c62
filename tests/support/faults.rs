//! A fault-injecting HTTP/1.1 proxy for the tests: it sits on loopback between a client and
//! a server and, per response, does what a [`Plan`] says: pass it, drop it, delay it, deliver
//! its request twice, or cut it short. Counters show which faults really happened.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request and its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward the response as it is.
    Pass,
    /// The server processes the request; its response is discarded and both connections are
    /// closed, as when a network drops a response.
    Drop,
    /// Hold the response this long, then forward it.
    Delay(Duration),
    /// Deliver the request twice, as a middlebox that retries would: a copy first, over an
    /// upstream connection of its own (so the two are not pipelined on one connection), its
    /// response discarded; then the request itself, whose response (the second run's) the
    /// client gets.
    Duplicate,
    /// Forward the first `n` bytes of the response (at least one, fewer than all), then close
    /// both connections.
    Truncate,
}

/// One request, as a [`Plan`] sees it.
pub struct Request<'a> {
    /// Its number, from 1, over every connection of the proxy, in order of arrival.
    pub number: u64,
    /// The whole request: head and body.
    pub bytes: &'a [u8],
}

impl Request<'_> {
    /// Whether the request line or the body names `action=open` or `action=close`: the two
    /// actions that are not idempotent by design (a repeat answers `Invalid connection
    /// state!`, which a client may only read as success on its own retry).
    pub fn opens_or_closes(&self) -> bool {
        self.bytes.windows(11).any(|w| w == b"action=open") || self.bytes.windows(12).any(|w| w == b"action=close")
    }
}

/// Picks the fault of each request.
pub type Plan = Arc<dyn Fn(&Request) -> Fault + Send + Sync>;

/// A plan from a rule on the request number alone (`|n| n % 5 == 0` drops every fifth).
pub fn drop_when(rule: impl Fn(u64) -> bool + Send + Sync + 'static) -> Plan {
    Arc::new(move |r: &Request| if rule(r.number) { Fault::Drop } else { Fault::Pass })
}

/// A seeded, deterministic plan: the fault of request `n` depends only on the seed and `n`.
/// Rates are in requests per thousand; the rest pass.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub seed: u64,
    pub drop: u64,
    pub delay: u64,
    pub duplicate: u64,
    pub truncate: u64,
    /// The longest delay; each delayed response waits between 1 ms and this.
    pub max_delay: Duration,
}

impl Mix {
    /// The plan. Opens and closes are never duplicated: they are not idempotent by design (a
    /// second one answers `Invalid connection state!`, which a client may only read as
    /// success on its own retry), so a middlebox that repeats them breaks any client. (A
    /// duplicated final close failed faults.rs once: a 1 % duplicate rate on each of the
    /// two closes that end a test.)
    pub fn plan(self) -> Plan {
        Arc::new(move |r: &Request| {
            let h = splitmix64(self.seed ^ r.number.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let roll = h % 1000;
            let mut edge = self.drop;
            if roll < edge {
                return Fault::Drop;
            }
            edge += self.delay;
            if roll < edge {
                let ms = (h >> 20) % self.max_delay.as_millis().max(1) as u64 + 1;
                return Fault::Delay(Duration::from_millis(ms));
            }
            edge += self.duplicate;
            if roll < edge {
                return if r.opens_or_closes() { Fault::Pass } else { Fault::Duplicate };
            }
            edge += self.truncate;
            if roll < edge {
                return Fault::Truncate;
            }
            Fault::Pass
        })
    }
}

/// A good 64-bit mix of one number (Steele, Lea and Flood's SplitMix64 finaliser): also an
/// aperiodic but repeatable sequence for drop rules, which a retry loop cannot fall into
/// step with as it can with `n % 5`.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the proxy did, counted as it did it.
#[derive(Default, Debug)]
pub struct Counters {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Requests read from clients.
    pub requests: AtomicU64,
    pub passed: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub duplicated: AtomicU64,
    pub truncated: AtomicU64,
}

impl Counters {
    fn add(&self, fault: Fault) {
        let counter = match fault {
            Fault::Pass => &self.passed,
            Fault::Drop => &self.dropped,
            Fault::Delay(_) => &self.delayed,
            Fault::Duplicate => &self.duplicated,
            Fault::Truncate => &self.truncated,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// `passed`, `dropped`, `delayed`, `duplicated`, `truncated`, for messages.
    pub fn summary(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::SeqCst);
        format!(
            "{} requests on {} connections: {} passed, {} dropped, {} delayed, {} duplicated, {} truncated",
            l(&self.requests),
            l(&self.connections),
            l(&self.passed),
            l(&self.dropped),
            l(&self.delayed),
            l(&self.duplicated),
            l(&self.truncated)
        )
    }
}

/// The proxy; it stops when dropped.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    /// Every request clients sent, in order of arrival, if recording was asked for.
    pub requests: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet: aborting it ends them all.
        self.task.abort();
    }
}

/// The state every connection of one proxy shares.
#[derive(Clone)]
struct Shared {
    upstream: SocketAddr,
    plan: Plan,
    counters: Arc<Counters>,
    /// `None` unless recording was asked for.
    requests: Option<Arc<Mutex<Vec<u8>>>>,
}

impl FaultProxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr, plan: Plan) -> FaultProxy {
        Self::start_with(upstream, plan, false).await
    }

    /// The same, keeping a copy of every request in [`FaultProxy::requests`].
    pub async fn start_recording(upstream: SocketAddr, plan: Plan) -> FaultProxy {
        Self::start_with(upstream, plan, true).await
    }

    async fn start_with(upstream: SocketAddr, plan: Plan, record: bool) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { upstream, plan, counters: counters.clone(), requests: record.then(|| requests.clone()) };
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                shared.counters.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = relay(client, shared).await;
                });
                // Reap finished connections so a long run does not keep them all.
                while connections.try_join_next().is_some() {}
            }
        });
        FaultProxy { addr, counters, requests, task }
    }

    /// The number of responses of one kind so far.
    pub fn count(&self, fault: fn(&Counters) -> &AtomicU64) -> u64 {
        fault(&self.counters).load(Ordering::SeqCst)
    }
}

/// Serves one client connection: one request at a time (HTTP/1.1 without pipelining, as
/// every client here speaks), each over the same upstream connection, its fault applied.
/// Returning closes both connections.
async fn relay(client: TcpStream, shared: Shared) -> io::Result<()> {
    let server = TcpStream::connect(shared.upstream).await?;
    // Each message goes out in one write; with Nagle a split one would wait for an ACK.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let mut client_read = BufReader::new(client_read);
    let mut server_read = BufReader::new(server_read);
    loop {
        let Some(request) = read_message(&mut client_read, false).await? else {
            return Ok(());
        };
        let number = shared.counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(log) = &shared.requests {
            log.lock().unwrap().extend_from_slice(&request);
        }
        let fault = (shared.plan)(&Request { number, bytes: &request });
        if fault == Fault::Duplicate {
            deliver_copy(shared.upstream, &request).await?;
        }
        server_write.write_all(&request).await?;
        let Some(response) = read_message(&mut server_read, true).await? else {
            // The server closed the connection: so does the proxy, towards the client.
            return Ok(());
        };
        shared.counters.add(fault);
        match fault {
            Fault::Pass | Fault::Duplicate => {}
            Fault::Drop => return Ok(()),
            Fault::Delay(pause) => tokio::time::sleep(pause).await,
            Fault::Truncate => {
                let cut = 1 + (splitmix64(number) as usize) % (response.len() - 1);
                client_write.write_all(&response[..cut]).await?;
                return Ok(());
            }
        }
        client_write.write_all(&response).await?;
    }
}

/// Sends `request` over a fresh upstream connection and reads (and discards) its response.
async fn deliver_copy(upstream: SocketAddr, request: &[u8]) -> io::Result<()> {
    let mut copy = TcpStream::connect(upstream).await?;
    copy.set_nodelay(true)?;
    copy.write_all(request).await?;
    let mut reader = BufReader::new(copy);
    read_message(&mut reader, true).await?;
    Ok(())
}

/// Reads one HTTP/1.1 message, head and body (framed by `Content-Length`, chunked, or for a
/// response with neither, by the end of the connection), as raw bytes. `None` at an end of
/// stream before its first byte.
pub async fn read_message<R: AsyncBufRead + Unpin>(r: &mut R, response: bool) -> io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut length = None;
    let mut chunked = false;
    let mut first = true;
    let mut bodyless = false;
    loop {
        let start = message.len();
        if r.read_until(b'\n', &mut message).await? == 0 {
            return if message.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        let line = String::from_utf8_lossy(&message[start..]).trim_end().to_owned();
        if first {
            first = false;
            // A response without a body by its status (RFC 9112 section 6.3).
            if response {
                let status = line.split(' ').nth(1).unwrap_or("");
                bodyless = status.starts_with('1') || status == "204" || status == "304";
            }
            continue;
        }
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    if bodyless {
        return Ok(Some(message));
    }
    if chunked {
        loop {
            let start = message.len();
            if r.read_until(b'\n', &mut message).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let size_line = String::from_utf8_lossy(&message[start..]).into_owned();
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| io::ErrorKind::InvalidData)?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let start = message.len();
                    if r.read_until(b'\n', &mut message).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if message[start..].trim_ascii().is_empty() {
                        return Ok(Some(message));
                    }
                }
            }
            let start = message.len();
            message.resize(start + size + 2, 0);
            r.read_exact(&mut message[start..]).await?;
        }
    }
    match length {
        Some(n) => {
            let start = message.len();
            message.resize(start + n, 0);
            r.read_exact(&mut message[start..]).await?;
        }
        None if response => {
            r.read_to_end(&mut message).await?;
        }
        None => {}
    }
    Ok(Some(message))
}

/// A plain TCP link (to Redis, say) that can be cut as a network partition would cut it:
/// [`Link::blackhole`] stops forwarding in both directions without closing anything (new
/// connections are accepted and then hear nothing: on loopback a connect cannot be made to
/// time out), and [`Link::heal`] resets every connection that lived through the partition
/// and forwards again.
pub struct Link {
    pub addr: SocketAddr,
    state: Arc<LinkState>,
    task: tokio::task::JoinHandle<()>,
}

/// What the link's connections watch.
struct LinkState {
    /// Whether bytes are discarded instead of forwarded.
    blackholed: std::sync::atomic::AtomicBool,
    /// Cancelled by `heal`: ends (with a reset) the connections made before it. Replaced by
    /// a fresh token for the connections made after.
    generation: Mutex<tokio_util::sync::CancellationToken>,
    /// Bytes discarded while blackholed.
    discarded: AtomicU64,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        self.state.generation.lock().unwrap().cancel();
    }
}

impl Link {
    /// A link to `upstream` on a free loopback port, forwarding. Not async (so it can be
    /// made where a URL is needed), but needs a tokio runtime.
    pub fn start(upstream: SocketAddr) -> Link {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(LinkState {
            blackholed: Default::default(),
            generation: Mutex::new(Default::default()),
            discarded: AtomicU64::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = shared.generation.lock().unwrap().clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = pump(&mut cr, &mut sw, &state) => {}
                        _ = pump(&mut sr, &mut cw, &state) => {}
                        _ = cut.cancelled() => {
                            // A reset, not a clean close: what a peer sees when the far
                            // side's state is gone.
                            if let (Ok(c), Ok(s)) = (cr.reunite(cw), sr.reunite(sw)) {
                                let _ = c.set_zero_linger();
                                let _ = s.set_zero_linger();
                            }
                        }
                    }
                });
            }
        });
        Link { addr, state, task }
    }

    /// Stops forwarding; nothing is closed.
    pub fn blackhole(&self) {
        self.state.blackholed.store(true, Ordering::SeqCst);
    }

    /// Resets the connections made so far and forwards again.
    pub fn heal(&self) {
        let mut generation = self.state.generation.lock().unwrap();
        generation.cancel();
        *generation = Default::default();
        self.state.blackholed.store(false, Ordering::SeqCst);
    }

    /// Bytes discarded while blackholed (in either direction).
    pub fn discarded(&self) -> u64 {
        self.state.discarded.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either ends, discarding what arrives while blackholed.
async fn pump(from: &mut tokio::net::tcp::OwnedReadHalf, to: &mut tokio::net::tcp::OwnedWriteHalf, state: &LinkState) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.blackholed.load(Ordering::SeqCst) {
            state.discarded.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
