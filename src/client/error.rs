//! The client's one error type, and the reason a session closed.

use std::fmt;

/// What went wrong with a request or a session.
///
/// Errors that end the session ([`Error::Timeout`], [`Error::RetriesExhausted`],
/// [`Error::UnknownConnector`]) close it: the call that met them gets the error, the
/// `on_close` handler gets it as [`CloseReason::Failed`], and every later call gets
/// [`Error::Closed`]. Other errors fail one request and leave the session open.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used (base URL, connection id).
    Config(String),
    /// `max_queue_length` requests are already waiting: this one was refused at once.
    QueueFull {
        /// The configured `max_queue_length`.
        max_queue_length: usize,
    },
    /// The session is closed; the reason it closed.
    Closed(CloseReason),
    /// A request took longer than the configured `timeout`, retries included. Ends the session.
    Timeout,
    /// The server does not know this connector any more (`Invalid connection state!`, 400 or
    /// 411): it timed out, or was closed and forgotten. Ends the session.
    UnknownConnector,
    /// `max_retries` retries failed; the last failure. Ends the session.
    RetriesExhausted(Box<Error>),
    /// The network failed: connect, reset, a response cut short. Retried.
    Transport(String),
    /// The server refused the request with this status and plain-text body (a bad request,
    /// too large, 5xx after retries, ...).
    Status {
        /// The HTTP status code.
        status: u16,
        /// The server's plain-text reason.
        body: String,
    },
    /// The server answered the token with `code` -1 (a failed login, for instance).
    Refused {
        /// The response's `msg`.
        msg: String,
        /// The whole response token.
        response: String,
    },
    /// The server's answer does not follow the protocol.
    Protocol(String),
}

impl Error {
    /// Whether this error ends the session.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Timeout | Error::UnknownConnector | Error::RetriesExhausted(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(why) => write!(f, "invalid client configuration: {why}"),
            Error::QueueFull { max_queue_length } => {
                write!(f, "request refused: {max_queue_length} requests are already queued (max_queue_length)")
            }
            Error::Closed(reason) => write!(f, "the session is closed ({reason})"),
            Error::Timeout => write!(f, "the request timed out"),
            Error::UnknownConnector => {
                write!(f, "the server does not know this connection (Invalid connection state!)")
            }
            Error::RetriesExhausted(last) => write!(f, "retries exhausted; last error: {last}"),
            Error::Transport(why) => write!(f, "network error: {why}"),
            Error::Status { status, body } => write!(f, "the server answered {status}: {body}"),
            Error::Refused { msg, .. } => write!(f, "refused by the server: {msg}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Why a session closed; given once to the `on_close` handler and in every later
/// [`Error::Closed`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Session::close`](super::Session::close) was called.
    Client,
    /// Every handle of the session was dropped.
    Dropped,
    /// The server closed the connector (`http.command.close`), with the reason it gave in
    /// `X-Pollgate-Close-Reason` (`timeout`, `shutdown`, `evicted`, `queue overflow`,
    /// `client` when a `close` token was sent) when it gave one.
    Server(Option<String>),
    /// An unrecoverable error: timeout, retries exhausted, unknown connector.
    Failed(Box<Error>),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Client => write!(f, "closed by the client"),
            CloseReason::Dropped => write!(f, "every handle was dropped"),
            CloseReason::Server(Some(reason)) => write!(f, "closed by the server: {reason}"),
            CloseReason::Server(None) => write!(f, "closed by the server"),
            CloseReason::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}
