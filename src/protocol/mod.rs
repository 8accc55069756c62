//! The wire: identifiers, the token envelope, and the fixed strings of the jWebSocket REST
//! protocol (`docs/PROTOCOL.md`, "Status codes" and "Tokens") and its system plugin.
//!
//! - here: identifiers, namespaces and fixed texts;
//! - [`envelope`]: the response envelope and what it reads of a request ([`TokenFields`]);
//! - [`view`]: reading a packet into a token, or in place ([`TokenView`]);
//! - [`json`]: writing tokens and JSON strings;
//! - [`system`]: what the engine and the system plugin both know of the system plugin's
//!   tokens (the welcome, the one-step `send`, its texts).

mod envelope;
mod json;
pub(crate) mod system;
mod view;

use md5::{Digest, Md5};
use serde_json::{Map, Value};

pub use self::envelope::*;
pub use self::json::*;
pub use self::view::*;

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


/// The open body: the frame-size control message.
pub fn max_frame_size_message(max_frame_size: usize) -> String {
    format!(
        "{{\"ns\":\"{NS_MSGCTRL}\",\"type\":\"info\",\"name\":\"maxFrameSize\",\"data\":{max_frame_size},\"jwsWrappedMsg\":true}}"
    )
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
    use super::view::read_flat;
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

