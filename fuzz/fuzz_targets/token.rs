//! Fuzz target `token`: a token as a client sends it (`action=send`, `data=TEXT`), through
//! the envelope helpers of `pollgate::protocol` and through the engine on an in-memory store,
//! the system and filesystem plugins included, as the server runs it.
//!
//! Checks beyond "no panic, no hang": `parse_token` accepts exactly the JSON objects, and
//! `TokenView` (the in-place reading `send` runs on) reads, answers and forwards the same; the
//! response envelope keeps its field order and jWebSocket's `utid` rule and survives a
//! round trip through its text; namespace normalisation is idempotent; every response body
//! and queued packet is a JSON object, a response echoes the request's `utid`, and an
//! idempotent send replayed with its `seq` answers the same body without running again.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pollgate::auth::Users;
use pollgate::config::Config;
use pollgate::engine::OpenRequest;
use pollgate::metrics::Metrics;
use pollgate::protocol::{self, Token, TokenFields};
use pollgate::store::memory::MemoryStore;
use pollgate::store::Store;
use pollgate::timer::ConnTimer;
use serde_json::Value;

/// What every input shares: building these per input would cost more than the input.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// The shipped demo users (argon2 hashes are made once, here).
    users: Arc<Users>,
    config: Arc<Config>,
    /// `$authorities` of a logged-in guest, as `login` stores it.
    guest_authorities: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/users.toml");
        let users = Users::load(std::path::Path::new(path)).expect("conf/users.toml loads");
        let guest_authorities =
            users.get("guest").expect("guest").authorities.iter().map(|a| format!("{a} ")).collect();
        let config = Config {
            // Sleeps (`echo` with `delay`, `wait`) are capped by this: 0 keeps inputs fast;
            // the cap itself is the same code for any value.
            max_sync_wait: 0,
            // `echoTestSize` builds a reply this large; a smaller cap keeps inputs fast.
            maxframesize: 64 * 1024,
            // The events of the shipped file, so their paths run too.
            broadcast_open_event: true,
            broadcast_close_event: true,
            broadcast_login_event: true,
            broadcast_logout_event: true,
            fs_root: std::env::temp_dir().join("pollgate-fuzz-token-fs"),
            ..Config::default()
        };
        Fixture { runtime, users: Arc::new(users), config: Arc::new(config), guest_authorities }
    })
}

/// `parse_token`, the envelope and `normalize_ns` on their own.
fn check_envelope(text: &str) -> Option<Token> {
    let token = protocol::parse_token(text);
    let is_object = matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_)));
    assert_eq!(token.is_some(), is_object, "parse_token and serde disagree on {text:?}");
    check_view(text, token.as_ref());
    let mut token = token?;

    let utid = protocol::utid(&token);
    assert!(utid == -1 || i32::try_from(utid).is_ok(), "utid {utid} out of jWebSocket's range");
    let response = protocol::response(&token);
    let keys: Vec<&str> = response.keys().map(String::as_str).take(4).collect();
    assert_eq!(keys, ["type", "code", "msg", "utid"], "envelope field order");
    assert_eq!(response.get("utid"), Some(&Value::from(utid)));
    assert_eq!(response.get("reqType"), token.get("type"), "reqType is the request's type");
    assert_eq!(response.get("ns").and_then(Value::as_str), protocol::get_str(&token, "ns"));
    let text = protocol::to_text(&response);
    assert_eq!(protocol::parse_token(&text).as_ref(), Some(&response), "envelope round trip: {text}");
    let error = protocol::error_response(&token, "no");
    assert_eq!((error.get("code"), error.get("msg")), (Some(&Value::from(-1)), Some(&Value::from("no"))));

    protocol::normalize_ns(&mut token);
    let once = token.clone();
    protocol::normalize_ns(&mut token);
    assert_eq!(token, once, "normalize_ns is idempotent");
    Some(token)
}

/// The view `send` runs on reads what `parse_token` reads, gives the same fields and
/// envelope, and forwards the same token.
fn check_view(text: &str, token: Option<&Token>) {
    let view = protocol::TokenView::parse(text);
    assert_eq!(view.as_ref().map(protocol::TokenView::to_token).as_ref(), token, "view of {text:?}");
    let (Some(view), Some(token)) = (view, token) else { return };
    for key in ["ns", "type", "targetId", "unid", "action", "data", "responseRequested"] {
        assert_eq!(view.str_field(key), token.str_field(key), "{key} of {text:?}");
        assert_eq!(view.bool_field(key), token.bool_field(key), "{key} of {text:?}");
    }
    assert_eq!(view.utid(), token.utid(), "utid of {text:?}");
    let envelope = |text: String| protocol::parse_token(&text).expect("an envelope is a JSON object");
    assert_eq!(envelope(protocol::response_text(&view)), envelope(protocol::response_text(token)));
    assert_eq!(envelope(protocol::error_text(&view, "no")), envelope(protocol::error_text(token, "no")));
    let mut with_source = token.clone();
    with_source.insert("sourceId".into(), "s".into());
    let forwarded = protocol::parse_token(&view.text_with_source("s"));
    assert_eq!(forwarded.as_ref(), Some(&with_source), "forwarded {text:?}");
    let names = |t: &Token| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(forwarded.as_ref().map(names), Some(names(&with_source)), "forwarded order of {text:?}");
}

/// A packet or body the engine produced: always one JSON object.
fn assert_token_text(what: &str, text: &str) -> Token {
    match protocol::parse_token(text) {
        Some(token) => token,
        None => panic!("{what} is not a JSON object: {text:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let request = check_envelope(text);
    let fx = fixture();
    fx.runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let engine =
            pollgate::fuzzing::engine(fx.config.clone(), store.clone(), fx.users.clone(), Arc::new(Metrics::default()));
        // Two connectors, `a` (the sender) and `b` (a `targetId` to reach): ids are opaque
        // to the engine.
        for (id, session) in [("a", "session-a"), ("b", "session-b")] {
            let open =
                OpenRequest { connector_id: id, session: Some(session), address: "127.0.0.1", user_agent: "fuzz" };
            engine.open(open).await.expect("open on a memory store");
        }
        let session = engine.touch("a").await.expect("touch").expect("a is live");
        // Even-length inputs run as a logged-in guest (the rights-checked paths), odd ones
        // anonymously; logging in with argon2 per input would be too slow.
        if data.len() % 2 == 0 {
            let mut entries = Token::new();
            entries.insert("$is_authenticated".into(), true.into());
            entries.insert("$username".into(), "guest".into());
            entries.insert("$uuid".into(), "guest".into());
            entries.insert("$authorities".into(), fx.guest_authorities.clone().into());
            store.session_login(&session, entries).await.expect("session_login");
        }

        // As `action=send&seq=1`, then its retry: answered from the record, not run again.
        let body = engine.send("a", &session, text, Some(1), None).await.expect("send on a memory store");
        let replay = engine.send("a", &session, text, Some(1), None).await.expect("replay on a memory store");
        assert_eq!(body, replay, "a replayed seq answers another body");

        if let (Some(body), Some(request)) = (&body, &request) {
            let reply = assert_token_text("the response body", body);
            let is_response_to_request = reply.get("type") == Some(&Value::from("response"))
                && reply.get("reqType") == request.get("type")
                && protocol::get_str(&reply, "ns") == protocol::get_str(request, "ns");
            if is_response_to_request {
                assert_eq!(reply.get("utid"), Some(&Value::from(protocol::utid(request))), "utid not echoed: {body}");
            }
        }
        assert!(body.is_none() || request.is_some(), "a body for text that is no token: {body:?}");

        // Everything queued for either connector is a token (or the close command).
        for id in ["a", "b"] {
            let drained =
                engine.sync(id, None, Duration::ZERO, &ConnTimer::default()).await.expect("sync on a memory store");
            for packet in &drained.packets {
                if &*packet.text != protocol::CLOSE_COMMAND {
                    assert_token_text("a queued packet", &packet.text);
                }
            }
        }
    });
});
