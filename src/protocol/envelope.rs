//! The standard response envelope (`type`, `code`, `msg`, `utid`, `ns`, `reqType`) and what it
//! reads of a request token, from a parsed [`Token`] or a view of its text ([`TokenFields`]).

use std::borrow::Cow;

use super::{get_bool, get_int, get_str, to_text_with_source, utid, write_json_str, Token, NS_SYSTEM};

/// The standard response envelope: `type`, `code`, `msg`, `utid`, `ns`, `reqType`.
pub fn response(request: &Token) -> Token {
    // Room for the envelope and the field or two most answers add, so it is made once.
    let mut t = Token::with_capacity(8);
    t.insert("type".into(), "response".into());
    t.insert("code".into(), 0.into());
    t.insert("msg".into(), "ok".into());
    t.insert("utid".into(), utid(request).into());
    if let Some(ns) = get_str(request, "ns") {
        t.insert("ns".into(), ns.into());
    }
    if let Some(kind) = request.get("type") {
        t.insert("reqType".into(), kind.clone());
    }
    t
}

/// What the envelope helpers and the system plugin's `send` read of a request token, from a
/// [`Token`] or from a view of a request's text read in place (the same code serves both).
pub trait TokenFields {
    /// A JSON string field; `None` if absent or not a string.
    fn str_field(&self, key: &str) -> Option<Cow<'_, str>>;
    /// A JSON boolean field; `None` if absent or not a boolean.
    fn bool_field(&self, key: &str) -> Option<bool>;
    /// A JSON integer in the 32-bit range; `None` if absent, not an integer or out of range.
    fn int_field(&self, key: &str) -> Option<i64>;
    /// The request's `utid`, -1 without one.
    fn utid(&self) -> i64 {
        self.int_field("utid").unwrap_or(-1)
    }
    /// Appends the JSON text of `key`'s value; false (nothing written) if there is none.
    fn write_field(&self, key: &str, out: &mut Vec<u8>) -> bool;
    /// The token's JSON text with `sourceId` set to `source`.
    fn text_with_source(&self, source: &str) -> String;
}

impl TokenFields for Token {
    fn str_field(&self, key: &str) -> Option<Cow<'_, str>> {
        get_str(self, key).map(Cow::Borrowed)
    }

    fn bool_field(&self, key: &str) -> Option<bool> {
        get_bool(self, key)
    }

    fn int_field(&self, key: &str) -> Option<i64> {
        get_int(self, key)
    }

    fn write_field(&self, key: &str, out: &mut Vec<u8>) -> bool {
        self.get(key).is_some_and(|value| serde_json::to_writer(out, value).is_ok())
    }

    fn text_with_source(&self, source: &str) -> String {
        to_text_with_source(self, source)
    }
}

/// `to_text(&response(request))`, written out directly (the answer to most sends).
pub fn response_text(request: &impl TokenFields) -> String {
    envelope_text(request, 0, "ok")
}

/// `to_text(&error_response(request, msg))`, written out directly.
pub fn error_text(request: &impl TokenFields, msg: &str) -> String {
    envelope_text(request, -1, msg)
}

fn envelope_text(request: &impl TokenFields, code: i32, msg: &str) -> String {
    envelope_end(envelope_start(request, code, msg))
}

/// The text of the envelope for `request` up to its closing brace, so that an answer can
/// add fields of its own ([`push_str_field`], [`push_int_field`]) before [`envelope_end`].
pub fn envelope_start(request: &impl TokenFields, code: i32, msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"type":"response""#);
    push_int_field(&mut out, "code", code.into());
    push_str_field(&mut out, "msg", msg);
    push_int_field(&mut out, "utid", request.utid());
    if let Some(ns) = request.str_field("ns") {
        push_str_field(&mut out, "ns", &ns);
    }
    let before = out.len();
    push_name(&mut out, "reqType");
    if !request.write_field("type", &mut out) {
        out.truncate(before);
    }
    out
}

/// Appends a string field to an envelope begun by [`envelope_start`]. `name` is written
/// as it is (the server's own names need no escapes), `value` as serde_json writes it.
pub fn push_str_field(out: &mut Vec<u8>, name: &str, value: &str) {
    push_name(out, name);
    write_json_str(out, value);
}

/// Appends an integer field to an envelope begun by [`envelope_start`] (see
/// [`push_str_field`]).
pub fn push_int_field(out: &mut Vec<u8>, name: &str, value: i64) {
    push_name(out, name);
    // serde_json writes integers without a formatting pass (`write!` costs one each); into
    // a Vec it cannot fail.
    let _ = serde_json::to_writer(out, &value);
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Closes an envelope begun by [`envelope_start`].
pub fn envelope_end(mut out: Vec<u8>) -> String {
    out.push(b'}');
    // Made of whole UTF-8 texts, so this never replaces anything.
    crate::params::utf8_lossy(out)
}

/// The envelope with `code` -1 and `msg`.
pub fn error_response(request: &Token, msg: &str) -> Token {
    let mut t = response(request);
    t.insert("code".into(), (-1).into());
    t.insert("msg".into(), msg.into());
    t
}

/// An event of the system plugin: `ns`, `type:"event"`, `name`.
pub fn event(name: &str) -> Token {
    let mut t = Token::new();
    t.insert("ns".into(), NS_SYSTEM.into());
    t.insert("type".into(), "event".into());
    t.insert("name".into(), name.into());
    t
}

