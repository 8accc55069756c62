//! The wire: identifiers, the token envelope, and the fixed strings of the jWebSocket REST
//! protocol (`shared/PROTOCOL.md` part A) and its system plugin.

use md5::{Digest, Md5};
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

/// The body of a sync: the packets' texts as a JSON array of strings. Written into a buffer
/// sized for them, so that it is not grown and copied on the way (as `to_string` does from
/// its first 128 bytes).
pub fn packets_text(texts: &[&str]) -> String {
    // Quotes are the most of what a packet's JSON needs escaped: room for one in four bytes.
    let room = 2 + texts.iter().map(|t| t.len() + t.len() / 4 + 3).sum::<usize>();
    let mut out = Vec::with_capacity(room);
    match serde_json::to_writer(&mut out, texts) {
        // serde_json writes valid UTF-8, so this never replaces anything.
        Ok(()) => crate::params::utf8_lossy(out),
        Err(_) => "[]".into(),
    }
}

/// `to_text(&response(request))`, written out directly (the answer to most sends).
pub fn response_text(request: &Token) -> String {
    use std::io::Write;
    let mut out = Vec::with_capacity(128);
    let written = (|| {
        write!(out, r#"{{"type":"response","code":0,"msg":"ok","utid":{}"#, utid(request))?;
        if let Some(ns) = get_str(request, "ns") {
            out.extend_from_slice(br#","ns":"#);
            serde_json::to_writer(&mut out, ns)?;
        }
        if let Some(kind) = request.get("type") {
            out.extend_from_slice(br#","reqType":"#);
            serde_json::to_writer(&mut out, kind)?;
        }
        out.push(b'}');
        Ok::<_, std::io::Error>(())
    })();
    match (written, String::from_utf8(out)) {
        (Ok(()), Ok(text)) => text,
        _ => to_text(&response(request)),
    }
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
    fn packets_text_is_the_json_array_of_the_texts() {
        let quoted = r#"{"ns":"x","data":"a \"b\" \\ c\n","é":"\u0001"}"#;
        let cases: [&[&str]; 4] = [&[], &["http.command.close"], &[quoted, "", "plain"], &["\u{2028}\t<>"]];
        for texts in cases {
            assert_eq!(packets_text(texts), serde_json::to_string(texts).unwrap());
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
        }
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
