//! The Rust client: a [`Session`] with one pollgate connection that behaves as a careful RPC
//! session does: requests run one at a time, in order, retried safely; packets the server
//! pushes arrive on a [`Stream`](futures_util::Stream) fed by a background long-poll.
//!
//! # How a session works
//!
//! - **One request at a time, in order.** Every call ([`Session::send_token`],
//!   [`Session::login`], ...) is queued *when it is called* (not when its future is first
//!   polled) and a single background task runs the queue in order. The queue holds at most
//!   `max_queue_length` requests that have not started; one more is refused at once with
//!   [`Error::QueueFull`]. For parallel requests, open several sessions.
//! - **Retries.** A request whose connection fails, whose response is lost or that gets a
//!   5xx is retried up to `max_retries` times, `retry_timeout` apart. Sends carry a sequence
//!   number (`seq`, docs/PROTOCOL.md's idempotent send), so a retry after a lost response gets the
//!   stored response and the token never runs twice.
//! - **Deadline.** A request that is not answered within `timeout` of its start, retries
//!   included, fails with [`Error::Timeout`] and the session closes.
//! - **The back channel.** A background task long-polls (`sync` with `wait`) on a connection
//!   of its own and acknowledges (`ack`) what it handed to the [`Incoming`] stream: a lost
//!   poll response is asked for again, so nothing is lost or repeated.
//! - **Closing.** The session closes on [`Session::close`], when every handle is dropped,
//!   when the server closes the connector (`http.command.close`), and on an unrecoverable
//!   failure (timeout, retries exhausted, a connector the server does not know). The
//!   `on_close` handler is called once with the [`CloseReason`]; every later call fails
//!   with [`Error::Closed`] and the stream ends. After a timeout or exhausted retries the
//!   client also tries, once and briefly, to close the connector on the server.
//! - **Secrets.** The connection id (128 random bits in hex unless you choose one) travels
//!   only in the `X-Pollgate-Connection` header, never in a URL, and is never logged;
//!   credentials travel in POST bodies.
//! - **Clock.** [`Session::clock_offset`] estimates the server's clock from the `Date`
//!   header of every response (see [`ClockOffset`] for the precision).
//! - **Login** is the system plugin's `login` token sent like any token (POST body, with a
//!   `seq`), not `action=login`: a retry after a lost response then gets the stored answer
//!   instead of `is authenticated`.
//! - **Changing the session id.** pollgate binds a connector to its session when it opens,
//!   so [`Session::change_session_id`] re-opens the same connection id in the new session
//!   (see there).
//!
//! Only plain `http://` URLs are supported (no TLS in this client yet).
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use pollgate::client::Session;
//!
//! # async fn run() -> Result<(), pollgate::client::Error> {
//! let session = Session::builder("http://127.0.0.1:8787/jWebSocket/http")
//!     .on_close(|reason| eprintln!("session closed: {reason}"))
//!     .connect()
//!     .await?;
//! let mut incoming = session.incoming().expect("taken once");
//! tokio::spawn(async move {
//!     while let Some(packet) = incoming.next().await {
//!         println!("pushed: {}", packet.text); // in order, each once
//!     }
//! });
//! session.login("guest", "guest").await?;
//! let echo = serde_json::json!({"ns": "org.jwebsocket.plugins.system", "type": "echo", "data": "hi"});
//! println!("{}", session.send_token(&echo).await?); // the response body
//! session.close().await?; // after the requests queued before it; the stream ends
//! # Ok(()) }
//! ```

mod clock;
mod error;
mod pipeline;
mod poller;
mod transport;

// For `crate::fuzzing`: the fuzzer checks that the server decodes what the client encodes.
#[cfg(feature = "internals")]
pub(crate) use transport::form_value;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use clock::ClockOffset;
pub use error::{CloseReason, Error};

use clock::Clock;
use pipeline::{Caller, Job, Op, Outcome, Pipeline};
use transport::{Endpoint, Transport};

/// The default base URL: the endpoint of a server on this machine with the default
/// configuration.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787/jWebSocket/http";

/// The system plugin's namespace (login token).
const NS_SYSTEM: &str = "org.jwebsocket.plugins.system";

/// Packets the [`Incoming`] stream buffers; while it is full the long-poll waits and the
/// server keeps the rest queued (up to its `max_queue_packets`, beyond which it closes the
/// connector: read the stream, or turn the back channel off).
const INCOMING_BUFFER: usize = 256;

/// Called once when the session closes.
type CloseHandler = Box<dyn Fn(&CloseReason) + Send + Sync>;

/// The settings of a session (built by [`Builder`]); read-only once connected.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Capacity of the request queue (requests not started yet).
    pub max_queue_length: usize,
    /// Retries of one request, or of consecutive failed polls.
    pub max_retries: u32,
    /// Pause before each retry.
    pub retry_timeout: Duration,
    /// Deadline of one request from its start, retries included; a poll gets it on top of
    /// its wait.
    pub timeout: Duration,
    /// The `wait` of each long-poll.
    pub poll_wait: Duration,
    /// Whether the poller runs.
    pub backchannel: bool,
}

/// The shortest `poll_wait`: a shorter one would make the poller a busy loop.
const MIN_POLL_WAIT: Duration = Duration::from_millis(100);

/// How to connect a [`Session`]. Every setting has a default:
///
/// | setting | default |
/// |---|---|
/// | base URL | [`DEFAULT_URL`] (`http://127.0.0.1:8787/jWebSocket/http`) |
/// | [`connection_id`](Builder::connection_id) | 128 random bits in hex |
/// | [`session_id`](Builder::session_id) | none: a session of the connector's own |
/// | [`max_queue_length`](Builder::max_queue_length) | 1000 requests |
/// | [`max_retries`](Builder::max_retries) | 5 |
/// | [`retry_timeout`](Builder::retry_timeout) | 1 s |
/// | [`timeout`](Builder::timeout) | 30 s |
/// | [`poll_wait`](Builder::poll_wait) | 25 s |
/// | [`backchannel`](Builder::backchannel) | on |
///
/// ```no_run
/// # async fn run() -> Result<(), pollgate::client::Error> {
/// use std::time::Duration;
/// let session = pollgate::client::Builder::default()
///     .timeout(Duration::from_secs(10))
///     .max_retries(3)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Builder {
    base_url: String,
    connection_id: Option<String>,
    session_id: Option<String>,
    config: Config,
    on_close: Option<CloseHandler>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new(DEFAULT_URL)
    }
}

/// Leaves the connection id out: it is a secret.
impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("base_url", &self.base_url)
            .field("connection_id", &self.connection_id.as_ref().map(|_| "<secret>"))
            .field("session_id", &self.session_id.as_ref().map(|_| "<secret>"))
            .field("config", &self.config)
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

impl Builder {
    /// A builder for the endpoint at `base_url` (`http://HOST[:PORT]{context}/http`).
    pub fn new(base_url: impl Into<String>) -> Builder {
        Builder {
            base_url: base_url.into(),
            connection_id: None,
            session_id: None,
            config: Config {
                max_queue_length: 1000,
                max_retries: 5,
                retry_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(30),
                poll_wait: Duration::from_secs(25),
                backchannel: true,
            },
            on_close: None,
        }
    }

    /// The connection id (a secret; printable ASCII). Default: 128 random bits in hex.
    /// Opening with the id of a live connector fails with [`Error::Status`] 400
    /// (`Invalid connection state!`); a closed one's id may be used again.
    pub fn connection_id(mut self, id: impl Into<String>) -> Builder {
        self.connection_id = Some(id.into());
        self
    }

    /// Opens the connector in the shared session `id` (docs/PROTOCOL.md, `sessionId`): connectors
    /// of one session share its login and storage. Default: a session of its own.
    pub fn session_id(mut self, id: impl Into<String>) -> Builder {
        self.session_id = Some(id.into());
        self
    }

    /// Requests that may wait for their turn; one more is refused with [`Error::QueueFull`].
    /// Default 1000 (at least 1).
    pub fn max_queue_length(mut self, n: usize) -> Builder {
        self.config.max_queue_length = n.max(1);
        self
    }

    /// Retries of one request (or of consecutive polls) before the session closes. Default 5.
    pub fn max_retries(mut self, n: u32) -> Builder {
        self.config.max_retries = n;
        self
    }

    /// The pause between retries. Default 1 s.
    pub fn retry_timeout(mut self, pause: Duration) -> Builder {
        self.config.retry_timeout = pause;
        self
    }

    /// The longest a request may take from its start, retries included; beyond it the
    /// request fails with [`Error::Timeout`] and the session closes. Also bounds a poll
    /// beyond its `poll_wait`. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.config.timeout = timeout;
        self
    }

    /// How long the server may hold a long-poll (`wait`); it caps it at its own
    /// `max_sync_wait` and half its session timeout. Default 25 s, at least 100 ms.
    pub fn poll_wait(mut self, wait: Duration) -> Builder {
        self.config.poll_wait = wait.max(MIN_POLL_WAIT);
        self
    }

    /// Whether to long-poll for pushed packets. Without it, [`Session::incoming`] ends at
    /// once, only the responses to requests arrive, and nothing keeps the connector alive
    /// between requests (the server closes it after its `timeout` of inactivity). Default on.
    pub fn backchannel(mut self, on: bool) -> Builder {
        self.config.backchannel = on;
        self
    }

    /// Called once, from a background task, when the session closes. Keep it short.
    pub fn on_close(mut self, handler: impl Fn(&CloseReason) + Send + Sync + 'static) -> Builder {
        self.on_close = Some(Box::new(handler));
        self
    }

    /// Opens the connection (`open`, then the first sync, which brings the welcome, within
    /// `timeout`) and starts the background tasks. Needs a tokio runtime.
    pub async fn connect(self) -> Result<Session, Error> {
        let connection_id = self.connection_id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let endpoint = Arc::new(Endpoint::new(&self.base_url, &connection_id)?);
        let clock = Arc::new(Clock::default());
        let config = Arc::new(self.config);
        let mut caller = Caller { transport: Transport::new(endpoint.clone(), clock.clone()), config: config.clone() };
        let (welcome, acked) = caller.open(self.session_id.as_deref()).await?;
        let source_id = welcome["sourceId"].as_str().unwrap_or_default().to_owned();
        let (deliver, incoming) = if config.backchannel {
            let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            clock: clock.clone(),
            closed: watch::Sender::new(None),
            on_close: self.on_close,
            source_id: parking_lot::Mutex::new(source_id),
            welcome: parking_lot::Mutex::new(welcome),
            session_id: parking_lot::Mutex::new(self.session_id),
            poll: tokio::sync::Mutex::new(PollState { acked, deliver }),
            poll_control: parking_lot::Mutex::new(PollControl { cancel: CancellationToken::new(), pausing: false }),
        });
        let (jobs, queue) = mpsc::channel(config.max_queue_length);
        if config.backchannel {
            let poller = Caller { transport: Transport::new(endpoint.clone(), clock.clone()), config: config.clone() };
            tokio::spawn(poller::run(shared.clone(), poller));
        }
        tokio::spawn(Pipeline { shared: shared.clone(), caller, sent: 0 }.run(queue));
        let incoming = Incoming { rx: incoming };
        Ok(Session { shared, jobs, incoming: Arc::new(parking_lot::Mutex::new(Some(incoming))) })
    }
}

/// What the background tasks and the handles share.
pub(crate) struct Shared {
    config: Arc<Config>,
    /// Fed by both connections' responses; read by [`Session::clock_offset`].
    clock: Arc<Clock>,
    /// `Some(reason)` once the session is closed; set once (by [`Shared::close`]), watched
    /// by the background tasks and [`Session::closed`].
    closed: watch::Sender<Option<CloseReason>>,
    on_close: Option<CloseHandler>,
    /// The connector's public id, from the welcome (re-read on `change_session_id`).
    source_id: parking_lot::Mutex<String>,
    /// The welcome token of the current connector.
    welcome: parking_lot::Mutex<serde_json::Value>,
    /// The `sessionId` the connector was opened with.
    session_id: parking_lot::Mutex<Option<String>>,
    /// The back channel's state. The poller holds this lock for each poll; the pipeline
    /// takes it (after cancelling the poll, see `poll_control`) to close or re-open the
    /// connector, so no poll runs against a connector in the middle of changing.
    poll: tokio::sync::Mutex<PollState>,
    /// How the pipeline stops the poller: it sets `pausing` and cancels the running poll,
    /// then waits for `poll`. A std-style lock, held for a few instructions only.
    poll_control: parking_lot::Mutex<PollControl>,
}

pub(crate) struct PollState {
    /// The sequence number of the last packet handed to the stream: the next sync's `ack`.
    acked: u64,
    /// Where packets go; `None` without a back channel, after the stream was dropped, and
    /// once the session is closed (which ends the stream).
    deliver: Option<mpsc::Sender<Packet>>,
}

pub(crate) struct PollControl {
    /// Cancels the poll in flight (a new token per poll).
    cancel: CancellationToken,
    /// Set while the pipeline wants or holds the poll lock: no new poll starts.
    pausing: bool,
}

/// Waits until the session is closed (the watch guard is dropped before returning, so the
/// caller may read the reason).
pub(crate) async fn wait_closed(closed: &mut watch::Receiver<Option<CloseReason>>) {
    let _ = closed.wait_for(Option::is_some).await;
}

impl Shared {
    /// Closes the session once: the first reason wins and goes to the handler.
    fn close(&self, reason: CloseReason) {
        let first = self.closed.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::debug!(source_id = %self.source_id.lock(), %reason, "client session closed");
            if let Some(handler) = &self.on_close {
                handler(&reason);
            }
        }
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.closed.borrow().clone()
    }

    /// Stops the poller and takes its lock (see `poll_control`).
    async fn pause_poller(&self) -> tokio::sync::MutexGuard<'_, PollState> {
        {
            let mut control = self.poll_control.lock();
            control.pausing = true;
            control.cancel.cancel();
        }
        self.poll.lock().await
    }

    fn resume_poller(&self) {
        self.poll_control.lock().pausing = false;
    }
}

/// A packet the server pushed to this connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Its sequence number in the connector's queue (1 is the welcome; they restart after
    /// [`Session::change_session_id`]).
    pub seq: u64,
    /// The packet as the server queued it (a JSON token, as text).
    pub text: String,
}

impl Packet {
    /// The packet parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.text)
    }
}

/// The packets pushed to a session, in order, each once; a [`Stream`](futures_util::Stream)
/// that ends when the session closes.
///
/// ```no_run
/// # async fn run(session: pollgate::client::Session) {
/// use futures_util::StreamExt;
/// let mut incoming = session.incoming().unwrap();
/// while let Some(packet) = incoming.next().await {
///     let token = packet.json().unwrap();
///     println!("{} {}", token["type"], packet.seq);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Incoming {
    /// `None` without a back channel.
    rx: Option<mpsc::Receiver<Packet>>,
}

impl Incoming {
    /// The next packet; `None` once the session is closed and every packet was read.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.rx.as_mut()?.recv().await
    }
}

impl futures_util::Stream for Incoming {
    type Item = Packet;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Packet>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

/// A connected session: cheap to clone, every clone is the same session. It closes when
/// [`close`](Session::close) is called or the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), pollgate::client::Error> {
/// let session = pollgate::client::Session::builder("http://127.0.0.1:8787/jWebSocket/http").connect().await?;
/// println!("connected as {}", session.source_id());
/// let whoami = session.whoami().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    /// The pipeline's queue; bounded by `max_queue_length`.
    jobs: mpsc::Sender<Job>,
    /// Taken by the first call to [`Session::incoming`].
    incoming: Arc<parking_lot::Mutex<Option<Incoming>>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("source_id", &*self.shared.source_id.lock())
            .field("closed", &self.shared.close_reason())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A [`Builder`] for the endpoint at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> Builder {
        Builder::new(base_url)
    }

    /// Queues `op` now (so the order of calls is the order of execution) and returns the
    /// future of its result.
    fn submit(&self, op: Op) -> impl Future<Output = Result<Outcome, Error>> + Send + 'static {
        let shared = self.shared.clone();
        let queued = match self.shared.close_reason() {
            Some(reason) => Err(Error::Closed(reason)),
            None => {
                let (reply, result) = oneshot::channel();
                match self.jobs.try_send(Job { op, reply }) {
                    Ok(()) => Ok(result),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Err(Error::QueueFull { max_queue_length: self.shared.config.max_queue_length })
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        Err(Error::Closed(shared.close_reason().unwrap_or(CloseReason::Client)))
                    }
                }
            }
        };
        async move {
            match queued?.await {
                Ok(result) => result,
                // The pipeline ended without answering: the session closed.
                Err(_) => Err(Error::Closed(shared.close_reason().unwrap_or(CloseReason::Client))),
            }
        }
    }

    /// Sends a token (`action=send` with a `seq`, the token as the POST body) and returns
    /// the response body: the first packet the server produced for this connector while
    /// handling it (often the token's response), or an empty string. Later packets arrive on
    /// [`incoming`](Session::incoming).
    pub fn send_token(
        &self,
        token: &serde_json::Value,
    ) -> impl Future<Output = Result<String, Error>> + Send + 'static {
        let result = self.submit(Op::Send(Bytes::from(token.to_string())));
        async move {
            match result.await? {
                Outcome::Body(body) => Ok(body),
                _ => Err(Error::Protocol("unexpected outcome".into())),
            }
        }
    }

    /// Logs in: the system plugin's `login` token, sent like any token (in the POST body,
    /// never in a URL, with a `seq` so a retry cannot log in twice). The response token, or
    /// [`Error::Refused`] with its message (`BadCredentialsException: Bad credentials`,
    /// `is authenticated`, ...).
    pub fn login(
        &self,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<serde_json::Value, Error>> + Send + 'static {
        let token = serde_json::json!({"ns": NS_SYSTEM, "type": "login", "username": user, "password": password});
        let body = self.send_token(&token);
        async move {
            let body = body.await?;
            let response: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| Error::Protocol(format!("a login response that is not JSON: {e}")))?;
            if response["code"] == 0 {
                Ok(response)
            } else {
                let msg = response["msg"].as_str().unwrap_or_default().to_owned();
                Err(Error::Refused { msg, response: body })
            }
        }
    }

    /// `action=whoami`: `sourceId`, `username` (null when not logged in), `authorities`,
    /// `timeout` (minutes).
    pub fn whoami(&self) -> impl Future<Output = Result<serde_json::Value, Error>> + Send + 'static {
        let result = self.submit(Op::Whoami);
        async move {
            match result.await? {
                Outcome::Body(body) => serde_json::from_str(&body)
                    .map_err(|e| Error::Protocol(format!("a whoami answer that is not JSON: {e}"))),
                _ => Err(Error::Protocol("unexpected outcome".into())),
            }
        }
    }

    /// Moves the connection into the shared session `session_id` (`None`: a fresh session of
    /// its own) and returns the previous one.
    ///
    /// pollgate binds a connector to its session when it opens, so this closes the connector
    /// and opens it again with the same connection id (hence the same
    /// [`source_id`](Session::source_id)) and the new `sessionId`, after delivering to the
    /// stream everything queued so far. The login state is the new session's: a session a
    /// connector of yours logged in to is logged in here too. Packets sent to this
    /// connector while it re-opens (a few milliseconds) are lost, and other clients see a
    /// `disconnect` and a `connect` event.
    pub fn change_session_id(
        &self,
        session_id: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send + 'static {
        let result = self.submit(Op::ChangeSession(session_id.map(str::to_owned)));
        async move {
            match result.await? {
                Outcome::Previous(previous) => Ok(previous),
                _ => Err(Error::Protocol("unexpected outcome".into())),
            }
        }
    }

    /// Closes the session after the requests queued before it: `action=close` on the server,
    /// then the `on_close` handler gets [`CloseReason::Client`]. Closing a closed session
    /// does nothing.
    pub async fn close(&self) -> Result<(), Error> {
        match self.submit(Op::Close).await {
            Ok(_) | Err(Error::Closed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The stream of pushed packets; `Some` on the first call only.
    pub fn incoming(&self) -> Option<Incoming> {
        self.incoming.lock().take()
    }

    /// The connector's public id (`sourceId`), which other clients address.
    pub fn source_id(&self) -> String {
        self.shared.source_id.lock().clone()
    }

    /// The welcome token the server queued at open.
    pub fn welcome(&self) -> serde_json::Value {
        self.shared.welcome.lock().clone()
    }

    /// The `sessionId` the connector was opened with.
    pub fn session_id(&self) -> Option<String> {
        self.shared.session_id.lock().clone()
    }

    /// Requests queued that have not started.
    pub fn num_pending(&self) -> usize {
        self.shared.config.max_queue_length - self.jobs.capacity()
    }

    /// The estimated offset of the server's clock (see [`ClockOffset`]); `None` if no
    /// response carried a `Date`.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        self.shared.clock.offset()
    }

    /// Why the session closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Whether the session closed.
    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Waits until the session closes; its reason.
    pub async fn closed(&self) -> CloseReason {
        let mut closed = self.shared.closed.subscribe();
        let reason = closed.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(Some(reason)) => reason,
            _ => CloseReason::Dropped,
        }
    }
}
