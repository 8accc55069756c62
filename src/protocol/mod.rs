//! The wire: identifiers, the token envelope, and the fixed strings of the jWebSocket REST
//! protocol (`docs/PROTOCOL.md`, "Status codes" and "Tokens") and its system plugin.

use std::borrow::Cow;

use md5::{Digest, Md5};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A token: a JSON object whose key order is kept (the client's order for forwarded tokens).
pub type Token = Map<String, Value>;

pub const NS_SYSTEM: &str = "org.jwebsocket.plugins.system";
pub const NS_FILESYSTEM: &str = "org.jwebsocket.plugins.filesystem";
pub const NS_MSGCTRL: &str = "org.jwebsocket.msgctrl";
pub const VENDOR: &str = "jWebSocket.org";
pub const VERSION: &str = "1.0.0 RC3 (build 50223)";
pub const ANONYMOUS: &str = "anonymous";
/// The packet that tells a client its connection was closed by the server.
pub const CLOSE_COMMAND: &str = "http.command.close";

/// Plain-text bodies of the protocol's error answers.
pub mod text {
    pub const MISSING_CONNECTION_ID: &str = "Missing 'connectionId' parameter value!";
    pub const INVALID_STATE: &str = "Invalid connection state!";
    pub const INVALID_PARAMETERS: &str = "Invalid request parameters!";
    pub const MISSING_FILENAME: &str = "Missing filename parameter!";
    pub const ORIGIN_NOT_ALLOWED: &str = "Origin not allowed!";
    pub const INVALID_REQUEST: &str = "Invalid request!";
    pub const TOO_MANY_CONNECTIONS: &str = "Too many connections!";
}

/// Lowercase hex of an MD5 digest.
pub fn md5_hex(input: &[u8]) -> String {
    hex(&Md5::digest(input))
}

/// Lowercase hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The connector id, a connection's public name (`sourceId`): `md5(connectionId + client_ip)`.
pub fn connector_id(connection_id: &str, client_ip: &str) -> String {
    let mut h = Md5::new();
    h.update(connection_id.as_bytes());
    h.update(client_ip.as_bytes());
    hex(&h.finalize())
}

/// The session id for a client-given `sessionId`: `md5(sessionId)`.
pub fn session_id(client_session_id: &str) -> String {
    md5_hex(client_session_id.as_bytes())
}

/// A fresh random session id, for connectors opened without `sessionId`.
pub fn random_session_id() -> String {
    hex(&rand::random::<[u8; 16]>())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The request's `utid` if it is a 32-bit integer, otherwise -1 (jWebSocket's rule).
pub fn utid(request: &Token) -> i64 {
    get_int(request, "utid").unwrap_or(-1)
}

/// A JSON integer in the 32-bit range, as jWebSocket's strict `getInteger`.
pub fn get_int(token: &Token, key: &str) -> Option<i64> {
    token.get(key).and_then(Value::as_i64).filter(|n| i32::try_from(*n).is_ok())
}

/// A JSON boolean only: the string `"true"` does not count.
pub fn get_bool(token: &Token, key: &str) -> Option<bool> {
    token.get(key).and_then(Value::as_bool)
}

/// A JSON string only.
pub fn get_str<'a>(token: &'a Token, key: &str) -> Option<&'a str> {
    token.get(key).and_then(Value::as_str)
}

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

/// The open body: the frame-size control message.
pub fn max_frame_size_message(max_frame_size: usize) -> String {
    format!(
        "{{\"ns\":\"{NS_MSGCTRL}\",\"type\":\"info\",\"name\":\"maxFrameSize\",\"data\":{max_frame_size},\"jwsWrappedMsg\":true}}"
    )
}

/// Parses a packet text into a token; `None` when it is not a JSON object.
///
/// As `serde_json::from_str::<Value>`, but the token's map is made with room for a
/// token's usual fields: grown from empty one field at a time, it was reallocated and
/// rehashed on the way (a tenth of a parse).
pub fn parse_token(text: &str) -> Option<Token> {
    struct TokenVisitor;
    impl<'de> serde::de::Visitor<'de> for TokenVisitor {
        type Value = Token;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<Token, A::Error> {
            let mut token = Token::with_capacity(8);
            // A repeated key keeps its first place and takes the last value, as in a Value.
            while let Some((key, value)) = fields.next_entry::<String, Value>()? {
                token.insert(key, value);
            }
            Ok(token)
        }
    }
    let mut parser = serde_json::Deserializer::from_str(text);
    let token = serde::Deserializer::deserialize_any(&mut parser, TokenVisitor).ok()?;
    parser.end().ok()?;
    Some(token)
}

/// A token read in place: its fields in the client's order, each value the JSON text it
/// came as, borrowed from the packet. It reads exactly the texts [`parse_token`] reads, but
/// allocates only its list of fields (and the names written with escapes), where a
/// [`Token`] allocates every name and value and hashes each name with SipHash. The system
/// plugin's `send`, the hot path, runs on it: the forwarded token is the client's values
/// copied as they came, not serialised again one by one.
pub struct TokenView<'a> {
    /// Each name, and its value's JSON text.
    fields: Vec<(Cow<'a, str>, &'a str)>,
    /// Whether a name comes more than once (then the last value counts, in the first place).
    repeats: bool,
}

impl<'a> TokenView<'a> {
    /// Reads a packet text; `None` when [`parse_token`] would give `None`.
    pub fn parse(text: &'a str) -> Option<TokenView<'a>> {
        let fields = match read_flat(text) {
            Some(fields) => fields,
            None => Self::read_fields(text)?,
        };
        Some(TokenView { repeats: any_repeated(&fields), fields })
    }

    /// The fields of any token, read by serde_json.
    fn read_fields(text: &'a str) -> Option<Vec<(Cow<'a, str>, &'a str)>> {
        /// A field name, borrowed unless it was written with escapes.
        struct Name<'a>(Cow<'a, str>);
        impl<'de> serde::Deserialize<'de> for Name<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(names: D) -> Result<Self, D::Error> {
                struct NameVisitor;
                impl<'de> serde::de::Visitor<'de> for NameVisitor {
                    type Value = Name<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Borrowed(name)))
                    }
                    fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Owned(name.to_owned())))
                    }
                }
                names.deserialize_str(NameVisitor)
            }
        }
        struct ViewVisitor;
        impl<'de> serde::de::Visitor<'de> for ViewVisitor {
            type Value = Vec<(Cow<'de, str>, &'de str)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some((Name(name), value)) = entries.next_entry::<Name, &RawValue>()? {
                    fields.push((name, value.get()));
                }
                Ok(fields)
            }
        }
        let mut parser = serde_json::Deserializer::from_str(text);
        let fields = serde::Deserializer::deserialize_any(&mut parser, ViewVisitor).ok()?;
        parser.end().ok()?;
        // A raw value is only skipped over, so check what a `Value` would refuse: numbers
        // out of range, escapes that make no character (a lone surrogate), nesting deeper
        // than serde_json's limit. Plain strings and literals, most of a token, need nothing.
        let plain = |raw: &str| match raw.as_bytes()[0] {
            b'"' => !raw.contains('\\'),
            b't' | b'f' | b'n' => true,
            _ => false,
        };
        let valid = fields.iter().all(|(_, value)| plain(value) || serde_json::from_str::<Value>(value).is_ok());
        valid.then_some(fields)
    }

    /// The value of `key`; the last one if the key is repeated, as in a [`Token`].
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().rev().find(|(name, _)| name == key).map(|(_, value)| *value)
    }

    /// The [`Token`] this text reads as: names and values copied out, in the same order.
    pub fn to_token(&self) -> Token {
        let mut token = Token::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            // Checked by `parse`, so this never gives `Null`.
            let value = serde_json::from_str(value).unwrap_or(Value::Null);
            token.insert(name.clone().into_owned(), value);
        }
        token
    }
}

impl TokenFields for TokenView<'_> {
    fn str_field(&self, key: &str) -> Option<Cow<'_, str>> {
        let raw = self.get(key)?;
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    fn bool_field(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    fn int_field(&self, key: &str) -> Option<i64> {
        let raw = self.get(key)?;
        // Digits alone, the usual utid, read directly (a valid JSON number has no leading
        // zeros); anything else as serde_json reads it (`-0` is a float there, for one).
        let number = if raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse::<i64>().ok()
        } else {
            serde_json::from_str::<Value>(raw).ok().and_then(|n| n.as_i64())
        };
        number.filter(|n| i32::try_from(*n).is_ok())
    }

    fn write_field(&self, key: &str, out: &mut Vec<u8>) -> bool {
        self.get(key).map(|raw| out.extend_from_slice(raw.as_bytes())).is_some()
    }

    /// `sourceId` replaced in its place, or added at the end. The values are the client's
    /// JSON texts: a client that wrote `1e2` or `"\u00e9"` gets them forwarded so, not as
    /// `100.0` or `"é"`. A token with a repeated name is forwarded as a [`Token`] keeps it:
    /// each name in its first place, with its last value.
    fn text_with_source(&self, source: &str) -> String {
        if self.repeats {
            // Rare, and as a `Token` it stays linear in the number of fields.
            return to_text_with_source(&self.to_token(), source);
        }
        let room = self.fields.iter().map(|(name, value)| name.len() + value.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(room + source.len() + 16);
        out.push(b'{');
        let mut source_written = false;
        for (at, (name, value)) in self.fields.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            match name {
                // Read without escapes, so it needs none.
                Cow::Borrowed(name) => {
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'"');
                }
                Cow::Owned(name) => write_json_str(&mut out, name),
            }
            out.push(b':');
            if name == "sourceId" {
                write_json_str(&mut out, source);
                source_written = true;
            } else {
                out.extend_from_slice(value.as_bytes());
            }
        }
        if !source_written {
            if !self.fields.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(br#""sourceId":"#);
            write_json_str(&mut out, source);
        }
        out.push(b'}');
        // Made of whole UTF-8 texts, so this never replaces anything.
        crate::params::utf8_lossy(out)
    }
}

/// The fields of a flat token read without serde_json, or `None` for any text that is not
/// one: an object whose names are written without escapes and whose values are strings
/// without escapes, integers of at most 15 digits, `true`, `false` or `null` (most tokens).
/// The others are read by serde_json; for a flat token both read the same fields.
fn read_flat(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let bytes = text.as_bytes();
    let skip_space = |mut at: usize| {
        while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    };
    // A string without escapes or control characters at `at` (its opening quote): the index
    // of its closing quote. Any other string is left to serde_json.
    let string_end = |at: usize| {
        let len = memchr::memchr2(b'"', b'\\', &bytes[at + 1..])?;
        let end = at + 1 + len;
        // The smallest byte, not `all`: a reduction without early exit is vectorised.
        let lowest = bytes[at + 1..end].iter().fold(u8::MAX, |low, b| low.min(*b));
        (bytes[end] == b'"' && lowest >= 0x20).then_some(end)
    };
    let mut fields = Vec::with_capacity(8);
    let mut at = skip_space(0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(at + 1);
    if bytes.get(at) == Some(&b'}') {
        return (skip_space(at + 1) == bytes.len()).then_some(fields);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let name_end = string_end(at)?;
        let name = &text[at + 1..name_end];
        at = skip_space(name_end + 1);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(at + 1);
        let end = match *bytes.get(start)? {
            b'"' => string_end(start)? + 1,
            b't' if bytes[start..].starts_with(b"true") => start + 4,
            b'f' if bytes[start..].starts_with(b"false") => start + 5,
            b'n' if bytes[start..].starts_with(b"null") => start + 4,
            b'-' | b'0'..=b'9' => {
                let digits_at = start + usize::from(bytes[start] == b'-');
                let digits = bytes[digits_at..].iter().take_while(|b| b.is_ascii_digit()).count();
                // No leading zero (JSON's rule); fractions and exponents go to serde_json.
                let leading_zero = digits > 1 && bytes[digits_at] == b'0';
                if digits == 0 || digits > 15 || leading_zero {
                    return None;
                }
                digits_at + digits
            }
            _ => return None,
        };
        fields.push((Cow::Borrowed(name), &text[start..end]));
        at = skip_space(end);
        match bytes.get(at) {
            Some(b',') => at = skip_space(at + 1),
            Some(b'}') => return (skip_space(at + 1) == bytes.len()).then_some(fields),
            _ => return None,
        }
    }
}

/// Whether a name comes more than once. A token has a few fields, compared pairwise; a
/// hostile one may have a hundred thousand, counted in a set (pairwise, that would be
/// seconds of work per request).
fn any_repeated(fields: &[(Cow<'_, str>, &str)]) -> bool {
    if fields.len() <= 16 {
        return (1..fields.len()).any(|at| fields[..at].iter().any(|(name, _)| *name == fields[at].0));
    }
    let mut seen = foldhash::HashSet::<&str>::default();
    seen.reserve(fields.len());
    !fields.iter().all(|(name, _)| seen.insert(name.as_ref()))
}

/// Appends `text` as a JSON string, as serde_json writes it: quotes, backslashes and control
/// characters escaped (`\n` and the like where JSON has one, else `\u00xx`), all else as it is.
///
/// Written here rather than through serde_json behind a scan for bytes to escape: one pass
/// instead of two, which finds the next byte to escape eight bytes at a time and copies the
/// run before it whole (callgrind: a long-poll round trip's strings 2.8k → 2.4k instructions,
/// most of the rest the sync body's packet, a quote every few bytes).
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while let Some(at) = next_escape(rest) {
        out.extend_from_slice(&rest[..at]);
        // Pushed a byte at a time: a two-byte slice would be a call to memcpy.
        let byte = rest[at];
        out.push(b'\\');
        match byte {
            b'"' | b'\\' => out.push(byte),
            b'\n' => out.push(b'n'),
            b'\r' => out.push(b'r'),
            b'\t' => out.push(b't'),
            0x08 => out.push(b'b'),
            0x0c => out.push(b'f'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
            }
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Where the first byte JSON escapes in a string is (a quote, a backslash, a control
/// character). Eight bytes at a time: a word's byte is flagged when it equals a quote or a
/// backslash (XORed with one, it is zero) or is below 0x20, with the bit trick that finds a
/// zero byte; the trick may also flag bytes above a flagged one (a borrow runs on), never
/// below, so the lowest flag is the first such byte.
fn next_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let flags =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if flags != 0 {
            return Some(at + flags.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder().iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
    tail.map(|i| at + i)
}

/// Serialises a token with no whitespace.
pub fn to_text(token: &Token) -> String {
    serde_json::to_string(token).unwrap_or_else(|_| "{}".into())
}

/// `token` as text with `sourceId` set to `source` (in its place if present, else at the
/// end): what `to_text` gives for a copy with `sourceId` inserted, without the copy.
pub fn to_text_with_source(token: &Token, source: &str) -> String {
    struct WithSource<'a>(&'a Token, &'a str);
    impl serde::Serialize for WithSource<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let WithSource(token, source) = *self;
            let present = token.contains_key("sourceId");
            let mut map = serializer.serialize_map(Some(token.len() + usize::from(!present)))?;
            for (key, value) in token {
                if key == "sourceId" {
                    map.serialize_entry(key, source)?;
                } else {
                    map.serialize_entry(key, value)?;
                }
            }
            if !present {
                map.serialize_entry("sourceId", source)?;
            }
            map.end()
        }
    }
    serde_json::to_string(&WithSource(token, source)).unwrap_or_else(|_| "{}".into())
}

/// jWebSocket rewrites `org.jWebSocket…` namespaces to `org.jwebsocket…` before dispatch.
pub fn normalize_ns(token: &mut Token) {
    if let Some(Value::String(ns)) = token.get_mut("ns") {
        if let Some(rest) = ns.strip_prefix("org.jWebSocket") {
            *ns = format!("org.jwebsocket{rest}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_id_is_md5_of_id_and_address() {
        assert_eq!(connector_id("abc", ""), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(connector_id("ab", "c"), connector_id("abc", ""));
        assert_eq!(session_id("abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(random_session_id().len(), 32);
        assert_ne!(random_session_id(), random_session_id());
    }

    /// The hand-written escaper gives serde_json's bytes for every ASCII character at every
    /// place in and after an eight-byte word, next to multi-byte UTF-8, and for texts that
    /// mix them.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every ASCII byte at every offset in a 19-byte text (two words and a tail), among
        // plain ASCII and among bytes of multi-byte characters (above 0x7F, never escaped):
        // the word-at-a-time search must neither miss one that needs escaping nor take one
        // that does not.
        let mut samples = Vec::new();
        for b in 0..=0x7Fu8 {
            for at in 0..19 {
                for filler in ["a", "é"] {
                    let mut text: Vec<String> = (0..19).map(|_| filler.to_owned()).collect();
                    text[at] = char::from(b).to_string();
                    samples.push(text.concat());
                }
            }
        }
        // Every pair of escaped bytes in one word: the lowest flag wins, whatever is above.
        for (x, y) in [(b'"', b'\\'), (b'\\', 0x01), (0x1F, b'"'), (b'\n', b'\n'), (b'"', 0x7F)] {
            samples.push(format!("ab{}cd{}ef", char::from(x), char::from(y)));
        }
        samples.extend(
            [
                "",
                "plain",
                r#"{"type":"response","msg":"ok"}"#,
                "tab\tand\\",
                "é€😀\u{7f}\u{80}\u{2028}",
                "\"\"\u{0}\u{1f}",
            ]
            .map(String::from),
        );
        for text in samples {
            let mut out = b"prefix".to_vec();
            write_json_str(&mut out, &text);
            let expected = format!("prefix{}", serde_json::to_string(&text).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{text:?}");
        }
    }

    #[test]
    fn a_token_parses_as_the_object_serde_json_reads() {
        let texts = [
            r#"{"ns":"x","type":"send","data":{"a":[1,2.5,null]},"utid":3}"#,
            r#" { "b" : 1 , "a" : 2 , "b" : 3 } "#,
            r#"{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10}"#,
            "{}",
        ];
        for text in texts {
            let Ok(Value::Object(expected)) = serde_json::from_str::<Value>(text) else { panic!("{text}") };
            let token = parse_token(text).unwrap();
            assert_eq!(token, expected, "{text}");
            // Same order too (a repeated key keeps its first place).
            assert_eq!(to_text(&token), to_text(&expected), "{text}");
        }
        for text in ["[1]", "\"s\"", "1", "null", "{\"a\":1} x", "{\"a\":1", "", "{\"a\":1}}"] {
            assert_eq!(parse_token(text), None, "{text}");
        }
    }

    #[test]
    fn numbers_survive_a_round_trip_through_text() {
        // Found by the token fuzz target: a parser that is not correctly rounded (serde_json
        // without `float_roundtrip`) read back a float it had written as a different one.
        let request = parse_token(r#"{"ns":"x","type":-107374.36472147483649,"n":48}"#).unwrap();
        let response = response(&request);
        assert_eq!(parse_token(&to_text(&response)), Some(response));
    }

    #[test]
    fn response_text_is_the_text_of_the_response() {
        for text in [
            r#"{"ns":"org.jwebsocket.plugins.system","type":"send","utid":7}"#,
            r#"{"type":{"odd":["x"]},"utid":"7","ns":5}"#,
            r#"{"ns":"a\"b\u00e9","type":"t\n"}"#,
            "{}",
        ] {
            let request = parse_token(text).unwrap();
            assert_eq!(response_text(&request), to_text(&response(&request)), "{text}");
            assert_eq!(error_text(&request, "no \"way\""), to_text(&error_response(&request, "no \"way\"")), "{text}");
            // A view of the same text answers the same, for compact texts byte for byte.
            let view = TokenView::parse(text).unwrap();
            assert_eq!(response_text(&view), response_text(&request), "{text}");
        }
    }

    /// Texts a client might send, each a case of the JSON grammar or of serde_json's limits.
    const AWKWARD_TEXTS: [&str; 27] = [
        r#"{"ns":"org.jwebsocket.plugins.system","type":"send","targetId":"t","data":"hi","utid":5}"#,
        r#" { "b" : 1 , "a" : [ 1, { "x" : null } ] , "b" : 3 } "#,
        r#"{"sourceId":"spoof","data":"x","sourceId":"again"}"#,
        r#"{"source\u0049d":"escaped name","d\"q":"\"","é":"\u00e9\n\ud83d\ude00"}"#,
        r#"{"n":1e2,"m":-0,"f":1.5E-3,"big":123456789012345678901234567890,"t":true,"f2":false,"z":null}"#,
        r#"{"utid":2147483648,"u2":-2147483648}"#,
        r#"{"utid":7.0}"#,
        r#"{"utid":-0,"type":"send"}"#,
        r#"{"utid":-5}"#,
        r#"{"utid":0}"#,
        r#"{"utid":9999999999}"#,
        r#"{"utid":1e1}"#,
        r#"{}"#,
        r#"{"n":1e400}"#,
        r#"{"s":"\ud800"}"#,
        r#"{"s":"\udc00x"}"#,
        "{\"s\":\"a\u{1}b\"}",
        r#"{"s":"\x"}"#,
        r#"{"n":01}"#,
        r#"{"a":1,}"#,
        r#"{"a":1} x"#,
        r#"{"a":1}}"#,
        r#"[1]"#,
        r#""s""#,
        "",
        r#"{"a" 1}"#,
        r#"{1:2}"#,
    ];

    /// Texts at the edges of what `read_flat` reads itself (the rest go to serde_json).
    const FLAT_EDGES: [&str; 24] = [
        " \t\r\n{ \"a\" :\t1 ,\n\"b\":\"x\" } \n",
        "{ }",
        r#"{"a":1x}"#,
        r#"{"a":-}"#,
        r#"{"a":-01}"#,
        r#"{"a":-0,"b":0,"c":-123456789012345}"#,
        r#"{"a":1234567890123456}"#,
        r#"{"a":tru}"#,
        r#"{"a":nul,"b":1}"#,
        r#"{"a":truex}"#,
        r#"{"a":true,"b":false,"c":null}"#,
        r#"{"a":"x""#,
        r#"{"a":"x"#,
        r#"{"a""#,
        r#"{"a"}"#,
        r#"{"a":}"#,
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"del\u{7f} \u{e9}\u{1F600}\"}",
        r#"{"é":"ü","a":1,"é":2}"#,
        r#"{"a":"x",}"#,
        r#"{"a":"x"} {"#,
        r#"{"a":"x\""}"#,
        r#"{"a\"b":1}"#,
        r#"{"a":1.}"#,
    ];

    /// [`AWKWARD_TEXTS`], [`FLAT_EDGES`], nesting at and beyond serde_json's limit, and
    /// tokens with more fields than are compared pairwise, with and without a repeated name.
    fn awkward_texts() -> Vec<String> {
        let fields = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",");
        let mut texts: Vec<String> = AWKWARD_TEXTS.iter().chain(&FLAT_EDGES).map(|t| t.to_string()).collect();
        texts.push(format!(r#"{{"d":{}{}}}"#, "[".repeat(200), "]".repeat(200)));
        texts.push(format!(r#"{{"d":{}{}}}"#, "[".repeat(100), "]".repeat(100)));
        texts.push(format!("{{{}}}", fields(40)));
        texts.push(format!(r#"{{{},"k7":"again","sourceId":"s"}}"#, fields(40)));
        texts
    }

    #[test]
    fn a_flat_token_is_read_as_serde_json_reads_it() {
        let mut flat = 0;
        for text in awkward_texts() {
            let Some(fields) = read_flat(&text) else { continue };
            assert_eq!(Some(fields), TokenView::read_fields(&text), "{text}");
            flat += 1;
        }
        // The usual token, the whitespace, the literals, the integers, the non-ASCII ones.
        assert!(flat >= 14, "only {flat} texts were read as flat tokens");
        assert!(read_flat(r#"{"ns":"n","type":"send","utid":12,"targetId":"t","data":"d"}"#).is_some());
    }

    #[test]
    fn a_view_reads_exactly_what_parse_token_reads() {
        for text in awkward_texts() {
            let view = TokenView::parse(&text);
            assert_eq!(view.as_ref().map(TokenView::to_token), parse_token(&text), "{text}");
        }
    }

    #[test]
    fn a_view_gives_the_fields_a_token_gives() {
        for text in awkward_texts() {
            let (Some(view), Some(token)) = (TokenView::parse(&text), parse_token(&text)) else { continue };
            for key in token.keys().map(String::as_str).chain(["missing", "utid"]) {
                assert_eq!(view.str_field(key), token.str_field(key), "{text} {key}");
                assert_eq!(view.bool_field(key), token.bool_field(key), "{text} {key}");
                let (mut from_view, mut from_token) = (Vec::new(), Vec::new());
                assert_eq!(view.write_field(key, &mut from_view), token.write_field(key, &mut from_token));
                let read = |json: &[u8]| serde_json::from_slice::<Value>(json).ok();
                assert_eq!(read(&from_view), read(&from_token), "{text} {key}");
            }
            assert_eq!(view.utid(), token.utid(), "{text}");
        }
    }

    #[test]
    fn a_view_forwards_what_the_token_forwards() {
        for text in awkward_texts() {
            let (Some(view), Some(token)) = (TokenView::parse(&text), parse_token(&text)) else { continue };
            let forwarded = view.text_with_source("new\"id");
            // The same token once read: same names in the same order, same values.
            let mut expected = token.clone();
            expected.insert("sourceId".into(), "new\"id".into());
            assert_eq!(parse_token(&forwarded), Some(expected), "{text}");
            let names = |t: &Token| t.keys().cloned().collect::<Vec<_>>();
            assert_eq!(
                names(&parse_token(&forwarded).unwrap()),
                names(&parse_token(&to_text_with_source(&token, "new\"id")).unwrap())
            );
        }
        // A compact text is forwarded byte for byte as the token would be.
        let text = AWKWARD_TEXTS[0];
        let (view, token) = (TokenView::parse(text).unwrap(), parse_token(text).unwrap());
        assert_eq!(view.text_with_source("s"), to_text_with_source(&token, "s"));
        assert_eq!(view.text_with_source("s"), format!("{},\"sourceId\":\"s\"}}", &text[..text.len() - 1]));
    }

    #[test]
    fn repeated_names_are_found_in_short_and_long_tokens() {
        let repeats = |text: &str| TokenView::parse(text).unwrap().repeats;
        assert!(!repeats(r#"{"a":1,"b":2}"#));
        assert!(repeats(r#"{"a":1,"b":2,"a":3}"#));
        let texts = awkward_texts();
        let (long, long_repeated) = (&texts[texts.len() - 2], &texts[texts.len() - 1]);
        assert!(!repeats(long));
        assert!(repeats(long_repeated));
        // Forwarded with each name once.
        let forwarded = TokenView::parse(long_repeated).unwrap().text_with_source("s");
        assert_eq!(forwarded.matches(r#""k7":"#).count(), 1, "{forwarded}");
        assert_eq!(forwarded.matches(r#""sourceId":"#).count(), 1, "{forwarded}");
    }

    #[test]
    fn text_with_source_is_the_text_of_a_copy_with_source_set() {
        for text in [r#"{"type":"send","sourceId":"old","data":"x"}"#, r#"{"type":"send","data":"\"q\""}"#, "{}"] {
            let token = parse_token(text).unwrap();
            let mut copy = token.clone();
            copy.insert("sourceId".into(), "new\"id".into());
            assert_eq!(to_text_with_source(&token, "new\"id"), to_text(&copy));
        }
        let token = parse_token(r#"{"a":1,"sourceId":"old","b":2}"#).unwrap();
        assert_eq!(to_text_with_source(&token, "s"), r#"{"a":1,"sourceId":"s","b":2}"#);
    }

    #[test]
    fn envelope_field_order_and_utid_rule() {
        let req = parse_token(r#"{"ns":"org.jwebsocket.plugins.system","type":"echo","utid":7}"#).unwrap();
        assert_eq!(
            to_text(&response(&req)),
            r#"{"type":"response","code":0,"msg":"ok","utid":7,"ns":"org.jwebsocket.plugins.system","reqType":"echo"}"#
        );
        let req = parse_token(r#"{"type":"x","utid":"7"}"#).unwrap();
        assert_eq!(
            to_text(&error_response(&req, "no")),
            r#"{"type":"response","code":-1,"msg":"no","utid":-1,"reqType":"x"}"#
        );
        let req = parse_token(r#"{"utid":4294967296}"#).unwrap();
        assert_eq!(utid(&req), -1);
    }

    #[test]
    fn strict_getters_and_namespace_normalisation() {
        let mut t = parse_token(r#"{"ns":"org.jWebSocket.plugins.system","b":"true","i":5.0,"s":1}"#).unwrap();
        assert_eq!(get_bool(&t, "b"), None);
        assert_eq!(get_int(&t, "i"), None);
        assert_eq!(get_str(&t, "s"), None);
        normalize_ns(&mut t);
        assert_eq!(get_str(&t, "ns"), Some(NS_SYSTEM));
    }
}
