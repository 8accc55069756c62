//! What a request is read with: the connection's [`Peer`], an endpoint request as the
//! connection read it ([`PlainRequest`]), and the headers an endpoint request keeps.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName};

use super::body::ReadBody;
use crate::timer::ConnTimer;

// Names, not strings: a lookup or an insert by string parses the name every time.
pub const HEADER_CONNECTION: HeaderName = HeaderName::from_static("x-pollgate-connection");
pub const HEADER_SEQ: HeaderName = HeaderName::from_static("x-pollgate-seq");
pub const HEADER_CLOSE_REASON: HeaderName = HeaderName::from_static("x-pollgate-close-reason");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Every request header an endpoint request is read for (but a preflight's, which
/// [`crate::conn`] reads as a [`PlainRequest`]): such a request keeps these and no others.
pub static ENDPOINT_HEADERS: [HeaderName; 5] =
    [header::ORIGIN, header::CONTENT_TYPE, header::USER_AGENT, HEADER_CONNECTION, X_FORWARDED_FOR];

/// An endpoint GET or POST, as the connection read it ([`crate::conn`]).
pub struct PlainRequest {
    pub post: bool,
    /// The request target after its first `?`, as it came (raw JSON and all).
    pub query: Bytes,
    /// Of the request's headers, those in [`ENDPOINT_HEADERS`].
    pub headers: HeaderMap,
    pub body: ReadBody,
}

/// What the requests of one TCP connection share: the peer's address, the identity derived
/// for the last request, and the connection's timer. A client sends the same connection id
/// from the same address on every request, so the md5 and the address text are made once per
/// connection.
pub struct Peer {
    pub addr: SocketAddr,
    pub(super) last: parking_lot::Mutex<Option<Identity>>,
    /// Lent to the read deadlines of [`crate::conn`] and to a held poll's
    /// wait, in turn.
    pub timer: ConnTimer,
}

/// A request's identity: its connection id, client address and connector id.
pub(super) struct Identity {
    pub(super) connection_id: String,
    pub(super) address: Arc<str>,
    pub(super) id: Arc<str>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer { addr, last: parking_lot::Mutex::new(None), timer: ConnTimer::default() }
    }
}
