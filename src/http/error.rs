//! Every way a request can fail, and the one place where a failure becomes a status and a
//! body.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{text_response, Body, BodyError};
use crate::protocol::text;
use crate::store::StoreError;

/// Every way a request can fail; [`HttpError::into_response`] is the only place that turns
/// one into a status and a body.
#[derive(Debug)]
pub enum HttpError {
    /// No connection id, in the `X-Pollgate-Connection` header or the `connectionId` parameter.
    MissingConnectionId,
    /// `open` on a live connector or another action on an unknown one; POST answers 411.
    InvalidState {
        /// Whether the request was a POST.
        post: bool,
    },
    /// An action without the parameters it needs (a `send` without data, a `login` without
    /// its user name or password).
    InvalidParameters,
    /// A method the endpoint does not take (HEAD among them: it would run the action).
    MethodNotAllowed,
    /// A pollgate extension parameter that does not parse (`ack`, `wait`, `seq`).
    BadParameter(&'static str),
    /// A shared poll's `share` parameter that cannot be carried: why, as the client reads it.
    BadShare(String),
    /// A `download` without a file name.
    MissingFilename,
    /// A request from an origin `domains` does not allow.
    OriginNotAllowed,
    /// An unknown action, or an action no plugin serves.
    InvalidRequest,
    /// `maxconnections` reached with `onmaxconnections = "reject"`.
    TooManyConnections,
    /// Body or parameters larger than `maxframesize`.
    TooLarge(usize),
    /// The client did not send its body within `body_read_timeout`.
    BodyTimeout,
    /// An `ack` beyond the last sequence number issued (which is given).
    AckAhead(u64),
    /// A `send` with this `seq` is running right now.
    SendInProgress,
    /// A `send` with this `seq` ran too long ago for its response to be kept.
    SendForgotten,
    /// The store cannot be reached.
    Unavailable(String),
    /// A server fault; the text is logged, the client gets a short message.
    Internal(String),
    /// The request panicked (in a plugin or in the engine) and was caught; the location is
    /// logged, never the panic's message (it may quote the request).
    Panicked(Option<String>),
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError::Unavailable(e.0)
    }
}

impl HttpError {
    fn status_and_body(&self) -> (StatusCode, String) {
        use HttpError::*;
        match self {
            MissingConnectionId => (StatusCode::BAD_REQUEST, text::MISSING_CONNECTION_ID.into()),
            InvalidState { post: false } => (StatusCode::BAD_REQUEST, text::INVALID_STATE.into()),
            InvalidState { post: true } => (StatusCode::LENGTH_REQUIRED, text::INVALID_STATE.into()),
            InvalidParameters => (StatusCode::BAD_REQUEST, text::INVALID_PARAMETERS.into()),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed!".into()),
            BadParameter(name) => (StatusCode::BAD_REQUEST, format!("Invalid '{name}' parameter value!")),
            BadShare(why) => (StatusCode::BAD_REQUEST, why.clone()),
            MissingFilename => (StatusCode::BAD_REQUEST, text::MISSING_FILENAME.into()),
            OriginNotAllowed => (StatusCode::UNAUTHORIZED, text::ORIGIN_NOT_ALLOWED.into()),
            InvalidRequest => (StatusCode::NOT_FOUND, text::INVALID_REQUEST.into()),
            TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, text::TOO_MANY_CONNECTIONS.into()),
            TooLarge(max) => (StatusCode::PAYLOAD_TOO_LARGE, format!("Request too large: the limit is {max} bytes!")),
            BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "Request body not received in time!".into()),
            AckAhead(last) => {
                (StatusCode::BAD_REQUEST, format!("Invalid 'ack' parameter value: the last sequence number is {last}!"))
            }
            SendInProgress => (StatusCode::CONFLICT, "A send with this 'seq' is in progress!".into()),
            SendForgotten => {
                (StatusCode::CONFLICT, "A send with this 'seq' was processed; its response is no longer kept!".into())
            }
            Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable: the store cannot be reached!".into())
            }
            Internal(_) | Panicked(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error!".into()),
        }
    }

    /// The response; client mistakes are logged at debug, server faults once at error.
    pub fn into_response(self) -> Response<Body> {
        let (status, body) = self.status_and_body();
        match &self {
            HttpError::Internal(why) => tracing::error!(status = status.as_u16(), "{why}"),
            HttpError::Panicked(location) => tracing::error!(
                status = status.as_u16(),
                location = location.as_deref().unwrap_or("unknown"),
                "request panicked; answered 500, the server goes on serving"
            ),
            HttpError::Unavailable(why) => tracing::error!(status = status.as_u16(), "store unavailable: {why}"),
            other => tracing::debug!(status = status.as_u16(), error = ?other, "request refused"),
        }
        let mut resp = text_response(status, body);
        if let HttpError::MethodNotAllowed = self {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, OPTIONS"));
        }
        resp
    }
}

impl From<BodyError> for HttpError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TimedOut => HttpError::BodyTimeout,
            BodyError::TooLarge(limit) => HttpError::TooLarge(limit),
        }
    }
}
