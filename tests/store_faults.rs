//! A store that fails part-way through a request: the request answers 503, never as if the
//! store had said "no" or "empty" (`access denied`, `not logged in`, an empty client list),
//! and nothing is half-done: once the store works again, the same requests (the same `seq`
//! for idempotent sends) succeed, and what failed queued nothing.
//!
//! A stopped Redis fails every request at its first store step, the one that finds the
//! connector, before any plugin runs (`cluster_faults.rs` covers that). To reach the steps
//! after it, a real `redis-server` refuses (`NOPERM`, through its ACL) only some reads or
//! commands, while the rest works.

mod support;

use serde_json::{json, Value};
use support::cluster::RedisServer;
use support::*;

const UNAVAILABLE: &str = "Service unavailable: the store cannot be reached!";
const NS_SYSTEM: &str = "org.jwebsocket.plugins.system";

/// One pollgate node on a Redis of its own.
struct Node {
    redis: RedisServer,
    server: Server,
    prefix: String,
}

impl Node {
    fn start() -> Node {
        let redis = RedisServer::start();
        let prefix = format!("f{:08x}:", rand::random::<u32>());
        let url = redis.url();
        let mut env = vec![("STORE", "redis"), ("REDIS_URL", url.as_str()), ("REDIS_PREFIX", prefix.as_str())];
        env.extend_from_slice(NO_EVENTS);
        let server = Server::start(&env);
        Node { redis, server, prefix }
    }

    /// An open client, logged in as `user` (password = user name, the demo accounts).
    fn logged_in(&self, user: &str) -> Client {
        let c = self.server.client();
        c.open();
        assert_eq!(c.login(user, user)["code"], 0);
        c
    }
}

/// A system-plugin token of `kind` with `fields`, sent with `action=send` (and `seq`).
fn system(c: &Client, kind: &str, fields: Value, seq: Option<u64>) -> Response {
    let mut token = json!({"ns": NS_SYSTEM, "type": kind});
    token.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let seq = seq.map(|s| format!("&seq={s}")).unwrap_or_default();
    c.get(&format!("action=send{seq}&data={token}"))
}

/// A request, named for messages.
type Request<'a> = (&'static str, Box<dyn Fn() -> Response + 'a>);

/// Runs every request and asserts each answered 503 with the protocol's body (naming every
/// one that did not).
fn all_unavailable(requests: &[Request]) {
    let wrong: Vec<String> = requests
        .iter()
        .filter_map(|(name, request)| {
            let r = request();
            (r.status != 503 || r.text() != UNAVAILABLE).then(|| format!("{name}: {} {}", r.status, r.text()))
        })
        .collect();
    assert!(wrong.is_empty(), "while the store fails, answered as if it had not:\n{}", wrong.join("\n"));
}

/// Runs every request and returns its answer, each asserted 200, by name.
fn all_served<'a>(requests: &[Request<'a>]) -> impl Fn(&str) -> Response {
    let answers: Vec<(&'static str, Response)> = requests
        .iter()
        .map(|(name, request)| {
            let r = request();
            assert_eq!(r.status, 200, "{name} once the store works: {}", r.text());
            (*name, r)
        })
        .collect();
    move |name: &str| answers.iter().find(|(n, _)| *n == name).unwrap().1.clone()
}

/// The `code` of a token response body.
fn code(r: &Response) -> Value {
    r.json()["code"].clone()
}

/// Sessions that cannot be read: login, logout, getAuthorities, getClients, the rights check
/// of send and broadcast, download, and the session tokens answer 503 instead of "is
/// authenticated", "not authenticated", "not logged in", "access denied" or a token error;
/// once Redis serves them again, each works, and the idempotent sends that failed (same
/// `seq`) run once.
#[test]
fn unreadable_sessions_answer_503_then_every_request_works_again() {
    let node = Node::start();
    let fs = node.server.fs_root();
    write(&fs.join("private/guest/notes.txt"), b"the notes");
    let user = node.logged_in("guest");
    assert_eq!(code(&system(&user, "sessionPut", json!({"key": "kept", "value": "v1"}), None)), 0);
    let newcomer = node.server.client();
    newcomer.open();
    let receiver = node.server.client();
    let receiver_id = receiver.open();

    let requests: Vec<Request> = vec![
        ("login", Box::new(|| newcomer.post(&[("action", "login"), ("username", "guest"), ("password", "guest")]))),
        ("whoami", Box::new(|| user.get("action=whoami"))),
        ("getAuthorities", Box::new(|| system(&user, "getAuthorities", json!({}), None))),
        ("getClients", Box::new(|| system(&user, "getClients", json!({}), None))),
        ("send", Box::new(|| system(&user, "send", json!({"targetId": receiver_id, "data": "hello"}), Some(1)))),
        ("broadcast", Box::new(|| system(&user, "broadcast", json!({"data": "to all"}), None))),
        ("download", Box::new(|| user.get("action=download&filename=notes.txt"))),
        ("sessionPut", Box::new(|| system(&user, "sessionPut", json!({"key": "new", "value": "v2"}), Some(2)))),
        ("sessionGet new", Box::new(|| system(&user, "sessionGet", json!({"key": "new"}), None))),
        ("sessionGet kept", Box::new(|| system(&user, "sessionGet", json!({"key": "kept"}), None))),
        ("sessionKeys", Box::new(|| system(&user, "sessionKeys", json!({}), None))),
        ("sessionRemove", Box::new(|| system(&user, "sessionRemove", json!({"key": "kept"}), None))),
        ("logout", Box::new(|| user.post(&[("action", "logout")]))),
    ];

    node.redis.refuse_session_reads(&node.prefix);
    all_unavailable(&requests);
    // Nothing that failed reached the receiver.
    assert_eq!(receiver.sync().packets(), Vec::<String>::new());

    node.redis.allow_all();
    let answer = all_served(&requests);
    assert_eq!(code(&answer("login")), 0, "the login that failed was not half-done");
    assert_eq!(answer("whoami").json()["username"], "guest");
    assert_eq!(code(&answer("getAuthorities")), 0);
    let clients = answer("getClients").json();
    assert_eq!((&clients["code"], &clients["count"]), (&json!(0), &json!(3)), "{clients}");
    assert_eq!(code(&answer("send")), 0, "the failed send gave its seq back");
    assert_eq!(code(&answer("broadcast")), 0);
    assert_eq!(answer("download").body, b"the notes");
    assert_eq!(code(&answer("sessionPut")), 0, "the failed sessionPut gave its seq back");
    assert_eq!(answer("sessionGet new").json()["data"]["value"], "v2");
    assert_eq!(answer("sessionGet kept").json()["data"]["value"], "v1");
    let keys = answer("sessionKeys").json()["data"].clone();
    assert!(keys.as_array().is_some_and(|k| k.contains(&json!("kept")) && k.contains(&json!("new"))), "{keys}");
    assert_eq!(answer("sessionRemove").json()["data"], json!({"key": "kept", "value": "v1"}));
    assert_eq!(code(&answer("logout")), 0);
    // The send ran once (its failed attempt queued nothing), then the broadcast.
    let got: Vec<Value> = receiver.collect(2).iter().map(|p| p["data"].clone()).collect();
    assert_eq!(got, [json!("hello"), json!("to all")]);
    assert_eq!(receiver.get("action=sync&wait=300").packets(), Vec::<String>::new());
}

/// The list of live connectors and their count cannot be read: getClients and broadcast
/// answer 503 instead of an empty list and a broadcast to nobody, and a wrong password 503
/// instead of an answer whose failure was not counted; once Redis serves them again, each
/// works, and the failed broadcast (same `seq`) reaches the others once.
#[test]
fn unreadable_connector_list_answers_503_then_works_again() {
    let node = Node::start();
    let user = node.logged_in("guest");
    let guesser = node.server.client();
    guesser.open();
    let receiver = node.server.client();
    receiver.open();

    let requests: Vec<Request> = vec![
        ("getClients", Box::new(|| system(&user, "getClients", json!({}), None))),
        ("broadcast", Box::new(|| system(&user, "broadcast", json!({"data": "to all"}), Some(1)))),
        ("wrong password", Box::new(|| guesser.post(&[("action", "login"), ("username", "guest"), ("password", "x")]))),
    ];

    // `ZRANGE` lists the live connectors; `ZCARD` counts them, and failed logins.
    node.redis.refuse_commands(&["zrange", "zcard"]);
    all_unavailable(&requests);
    assert_eq!(receiver.sync().packets(), Vec::<String>::new());

    node.redis.allow_all();
    let answer = all_served(&requests);
    let clients = answer("getClients").json();
    assert_eq!((&clients["code"], &clients["count"]), (&json!(0), &json!(3)), "{clients}");
    assert_eq!(code(&answer("broadcast")), 0);
    assert_eq!(answer("wrong password").json()["msg"], "BadCredentialsException: Bad credentials");
    let got: Vec<Value> = receiver.collect(1).iter().map(|p| p["data"].clone()).collect();
    assert_eq!(got, [json!("to all")]);
    assert_eq!(receiver.get("action=sync&wait=300").packets(), Vec::<String>::new());
}

/// The session of a new connector cannot be set up (`HINCRBY`, which numbers a session's
/// new entries, refused): the open answers 503 and is undone, so opening again answers 503
/// again rather than `Invalid connection state!`, and once Redis serves it again the same
/// connection opens and works.
#[test]
fn an_open_whose_session_cannot_be_set_up_is_undone() {
    let node = Node::start();
    let c = node.server.client();

    node.redis.refuse_commands(&["hincrby"]);
    for attempt in ["open", "open again"] {
        let r = c.get("action=open");
        assert_eq!((r.status, r.text().as_str()), (503, UNAVAILABLE), "{attempt}");
    }

    node.redis.allow_all();
    c.open();
    let who = c.get("action=whoami");
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(code(&system(&c, "sessionPut", json!({"key": "k", "value": 1}), None)), 0);
}

/// A close the store cannot make (`ZREM`, which takes a connector off the live list,
/// refused): `action=close` and the `close` token answer 503 rather than report a close that
/// did not happen, the connectors stay live, and once Redis serves again both close.
#[test]
fn a_close_the_store_cannot_make_answers_503() {
    let node = Node::start();
    let (by_action, by_token) = (node.server.client(), node.server.client());
    by_action.open();
    by_token.open();
    let requests: Vec<Request> = vec![
        ("action=close", Box::new(|| by_action.get("action=close"))),
        ("close token", Box::new(|| system(&by_token, "close", json!({}), None))),
    ];

    node.redis.refuse_commands(&["zrem"]);
    all_unavailable(&requests);

    node.redis.allow_all();
    for c in [&by_action, &by_token] {
        assert_eq!(c.get("action=whoami").status, 200, "still live after the failed close");
    }
    let answer = all_served(&requests);
    assert_eq!(answer("action=close").text(), "http.command.close");
    for c in [&by_action, &by_token] {
        assert_eq!(c.get("action=whoami").text(), "Invalid connection state!", "closed");
    }
}
