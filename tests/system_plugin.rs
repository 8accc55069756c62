//! The system plugin (`org.jwebsocket.plugins.system`) of docs/PROTOCOL.md ("The system plugin"), token by token:
//! exact bodies and field order, rights, shared sessions, session storage, events, and the
//! pollgate fixes listed at the top of that document.

mod support;

use serde_json::{json, Value};
use support::*;

const NS: &str = "org.jwebsocket.plugins.system";
const EXCLUDE: &str = "org.jwebsocket.plugins.system.events.exclude";
const RIGHT_SEND: &str = "org.jwebsocket.plugins.system.send";
const RIGHT_BROADCAST: &str = "org.jwebsocket.plugins.system.broadcast";

/// A server with all four system events off, so queues hold only what a test sends.
fn quiet_server() -> Server {
    Server::start(&[
        ("BROADCAST_OPEN_EVENT", "false"),
        ("BROADCAST_CLOSE_EVENT", "false"),
        ("BROADCAST_LOGIN_EVENT", "false"),
        ("BROADCAST_LOGOUT_EVENT", "false"),
    ])
}

/// POSTs `data` (raw token text) with `action=send`; the response must be a 200.
fn send_raw(c: &Client, data: &str) -> Response {
    let r = c.post(&[("action", "send"), ("data", data)]);
    assert_eq!(r.status, 200, "{data}: {}", r.text());
    r
}

/// Sends a system token `{"ns":NS,"type":kind<rest>}` and returns the body text.
fn sys(c: &Client, kind: &str, rest: &str) -> String {
    send_raw(c, &format!(r#"{{"ns":"{NS}","type":"{kind}"{rest}}}"#)).text()
}

/// Sends a token built with `json!` (key order kept) and returns the body text.
fn send_json(c: &Client, token: &Value) -> String {
    send_raw(c, &token.to_string()).text()
}

/// The action=login body text.
fn login_raw(c: &Client, user: &str, password: &str) -> String {
    let r = c.post(&[("action", "login"), ("username", user), ("password", password)]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The standard success reply.
fn ok_reply(utid: i64, req: &str) -> String {
    format!(r#"{{"type":"response","code":0,"msg":"ok","utid":{utid},"ns":"{NS}","reqType":"{req}"}}"#)
}

/// The standard error reply.
fn err_reply(utid: i64, req: &str, msg: &str) -> String {
    format!(r#"{{"type":"response","code":-1,"msg":"{msg}","utid":{utid},"ns":"{NS}","reqType":"{req}"}}"#)
}

/// A success reply with extra fields (`extra` starts with a comma).
fn ok_with(utid: i64, req: &str, extra: &str) -> String {
    format!(r#"{{"type":"response","code":0,"msg":"ok","utid":{utid},"ns":"{NS}","reqType":"{req}"{extra}}}"#)
}

/// The queued packets of a connector (a plain, immediate sync).
fn queued(c: &Client) -> Vec<String> {
    c.sync().packets()
}

/// Logs in through the action and checks that it worked.
fn must_login(c: &Client, user: &str, password: &str) {
    let r = c.login(user, password);
    assert_eq!(r["code"], 0, "{r}");
}

/// The keys of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

// ---- ping, echo, wait ------------------------------------------------------------------------

/// ping answers the std reply with the request's 32-bit integer utid (else -1); echo:false answers nothing.
#[test]
fn ping_replies_with_std_envelope_and_utid() {
    let server = quiet_server();
    let c = server.client();
    c.open();
    assert_eq!(sys(&c, "ping", r#","utid":7"#), ok_reply(7, "ping"));
    assert_eq!(sys(&c, "ping", ""), ok_reply(-1, "ping"));
    assert_eq!(sys(&c, "ping", r#","utid":"7""#), ok_reply(-1, "ping"));
    assert_eq!(sys(&c, "ping", r#","utid":4294967296"#), ok_reply(-1, "ping"));
    assert_eq!(sys(&c, "ping", r#","echo":true,"utid":8"#), ok_reply(8, "ping"));
    // Booleans are strict: the string "false" means the default (echo).
    assert_eq!(sys(&c, "ping", r#","echo":"false","utid":11"#), ok_reply(11, "ping"));
    // org.jWebSocket… is normalised before dispatch.
    let r = send_raw(&c, r#"{"ns":"org.jWebSocket.plugins.system","type":"ping","utid":9}"#);
    assert_eq!(r.text(), ok_reply(9, "ping"));
    let r = send_raw(&c, &format!(r#"{{"ns":"{NS}","type":"ping","echo":false,"utid":10}}"#));
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(queued(&c), Vec::<String>::new(), "echo:false queues nothing either");
}

/// echo returns data (as serde_json writes it, however the client escaped it), the generated
/// echoTestSize/echoTestData, delayed, and the missing-data error.
#[test]
fn echo_returns_data_test_data_and_errors() {
    let server = quiet_server();
    let c = server.client();
    c.open();
    assert_eq!(sys(&c, "echo", r#","data":"REST","utid":3"#), ok_with(3, "echo", r#","data":"REST""#));
    assert_eq!(
        sys(&c, "echo", r#","data":"x","echoTestSize":40,"utid":4"#),
        ok_with(
            4,
            "echo",
            r#","data":"x","echoTestSize":40,"echoTestData":"jWebSocket Echo Simulation Data - jWebSo""#
        )
    );
    assert_eq!(sys(&c, "echo", r#","data":"x","echoTestSize":0"#), ok_with(-1, "echo", r#","data":"x""#));
    let start = std::time::Instant::now();
    assert_eq!(
        sys(&c, "echo", r#","data":"x","delay":60,"utid":5"#),
        ok_with(5, "echo", r#","data":"x","delayed":60"#)
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(60));
    // Data written with escapes comes back as serde_json writes the decoded text, and a
    // token that is not flat (a nested value) is answered alike.
    assert_eq!(sys(&c, "echo", r#","data":"a\"b\u00e9\/c\n","utid":8"#), ok_with(8, "echo", r#","data":"a\"bé/c\n""#));
    assert_eq!(sys(&c, "echo", r#","data":"x","extra":{"n":[1.5]},"utid":9"#), ok_with(9, "echo", r#","data":"x""#));
    let missing = "missing 'data' argument for 'echo' command";
    assert_eq!(sys(&c, "echo", r#","utid":6"#), err_reply(6, "echo", missing));
    assert_eq!(sys(&c, "echo", r#","data":5,"utid":7"#), err_reply(7, "echo", missing));
}

/// wait sleeps `duration` ms and answers it; a negative one is an error; responseRequested:false answers nothing.
#[test]
fn wait_answers_duration_errors_and_silence() {
    let server = quiet_server();
    let c = server.client();
    c.open();
    let start = std::time::Instant::now();
    assert_eq!(sys(&c, "wait", r#","duration":100,"utid":1"#), ok_with(1, "wait", r#","duration":100"#));
    assert!(start.elapsed() >= std::time::Duration::from_millis(100));
    // A non-integer duration counts as 0.
    assert_eq!(sys(&c, "wait", r#","duration":"50""#), ok_with(-1, "wait", r#","duration":0"#));
    assert_eq!(sys(&c, "wait", ""), ok_with(-1, "wait", r#","duration":0"#));
    assert_eq!(
        sys(&c, "wait", r#","duration":-1,"utid":2"#),
        err_reply(2, "wait", "missing or invalid 'duration' argument for 'wait' command")
    );
    assert_eq!(sys(&c, "wait", r#","duration":10,"responseRequested":false"#), "");
    assert_eq!(sys(&c, "wait", r#","duration":-1,"responseRequested":false"#), "");
    assert_eq!(queued(&c), Vec::<String>::new());
}

// ---- send, respond, broadcast ----------------------------------------------------------------

/// send gives the target the whole token in the client's key order with sourceId overwritten in place (or appended) and the sender the std reply.
#[test]
fn send_delivers_the_whole_token_with_source_id() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    must_login(&a, "guest", "guest");
    let request = format!(
        r#"{{"ns":"{NS}","type":"send","targetId":"{b_id}","sourceId":"spoofed","sender":"guest","data":"hi","utid":5}}"#
    );
    assert_eq!(send_raw(&a, &request).text(), ok_reply(5, "send"));
    let expected = request.replace("spoofed", &a_id);
    assert_eq!(queued(&b), vec![expected]);
    // Without a sourceId it is appended; nested values pass through unchanged.
    let request =
        format!(r#"{{"data":{{"z":[1,2],"a":null}},"type":"send","ns":"{NS}","targetId":"{b_id}","utid":6}}"#);
    assert_eq!(send_raw(&a, &request).text(), ok_reply(6, "send"));
    let expected = format!(r#"{},"sourceId":"{a_id}"}}"#, &request[..request.len() - 1]);
    assert_eq!(queued(&b), vec![expected]);
    assert_eq!(queued(&a), Vec::<String>::new(), "the sender gets nothing queued");
}

/// send with responseRequested:false answers an empty body; the target still gets the token, responseRequested included.
#[test]
fn send_without_response_requested() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    must_login(&a, "root", "root");
    let request = format!(r#"{{"ns":"{NS}","type":"send","targetId":"{b_id}","responseRequested":false,"data":"x"}}"#);
    let r = send_raw(&a, &request);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let expected = format!(
        r#"{{"ns":"{NS}","type":"send","targetId":"{b_id}","responseRequested":false,"data":"x","sourceId":"{a_id}"}}"#
    );
    assert_eq!(queued(&b), vec![expected]);
    assert_eq!(queued(&a), Vec::<String>::new());
}

/// send to oneself is allowed: the forwarded token is the body and the std reply is queued after it.
#[test]
fn send_to_oneself_body_then_reply() {
    let server = quiet_server();
    let a = server.client();
    let a_id = a.open();
    must_login(&a, "guest", "guest");
    let request = format!(r#"{{"ns":"{NS}","type":"send","targetId":"{a_id}","data":"me","utid":3}}"#);
    let expected =
        format!(r#"{{"ns":"{NS}","type":"send","targetId":"{a_id}","data":"me","utid":3,"sourceId":"{a_id}"}}"#);
    assert_eq!(send_raw(&a, &request).text(), expected);
    assert_eq!(queued(&a), vec![ok_reply(3, "send")]);
}

/// send to an unknown or missing targetId answers "No target connector with endpoint-id 'X' found.", even with responseRequested:false.
#[test]
fn send_to_unknown_target_errors() {
    let server = quiet_server();
    let a = server.client();
    a.open();
    must_login(&a, "guest", "guest");
    assert_eq!(
        sys(&a, "send", r#","targetId":"nobody","data":"x","utid":8"#),
        err_reply(8, "send", "No target connector with endpoint-id 'nobody' found.")
    );
    assert_eq!(
        sys(&a, "send", r#","targetId":"nobody","responseRequested":false"#),
        err_reply(-1, "send", "No target connector with endpoint-id 'nobody' found.")
    );
    assert_eq!(
        sys(&a, "send", r#","data":"x","utid":9"#),
        err_reply(9, "send", "No target connector with endpoint-id 'null' found.")
    );
    // pollgate assigns no node ids: a `unid` never matches.
    assert_eq!(
        sys(&a, "send", r#","unid":"n1","data":"x","utid":10"#),
        err_reply(10, "send", "No target connector with node-id 'n1' found.")
    );
}

/// An anonymous (not logged-in) sender lacks the send right: "access denied" in normal and in forward.json mode, nothing delivered.
#[test]
fn send_requires_the_send_right() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    assert_eq!(
        sys(&a, "send", &format!(r#","targetId":"{b_id}","data":"x","utid":9"#)),
        err_reply(9, "send", "access denied")
    );
    assert_eq!(
        sys(&a, "send", &format!(r#","targetId":"{b_id}","responseRequested":false"#)),
        err_reply(-1, "send", "access denied")
    );
    // pollgate fix 4: forward.json checks the right too.
    let forward = json!({"ns": NS, "type": "send", "targetId": b_id, "action": "forward.json",
        "responseRequested": false, "data": r#"{"ns":"x","type":"y"}"#, "utid": 4});
    assert_eq!(send_json(&a, &forward), err_reply(4, "send", "access denied"));
    assert_eq!(queued(&b), Vec::<String>::new(), "nothing delivered");
}

/// forward.json sends the parsed `data` string to the target as-is (no sourceId), `{}` for invalid JSON, and its own error text.
#[test]
fn forward_json_sends_the_parsed_data() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    must_login(&a, "guest", "guest");
    let inner = r#"{"ns":"my.app","type":"hello","payload":{"z":1,"a":2},"utid":3}"#;
    let forward =
        json!({"ns": NS, "type": "send", "targetId": b_id, "action": "forward.json", "data": inner, "utid": 11});
    assert_eq!(send_json(&a, &forward), ok_reply(11, "send"));
    assert_eq!(queued(&b), vec![inner.to_owned()]);
    let forward = json!({"ns": NS, "type": "send", "targetId": b_id, "action": "forward.json",
        "responseRequested": false, "data": "not json"});
    assert_eq!(send_json(&a, &forward), "");
    assert_eq!(queued(&b), vec!["{}".to_owned()]);
    let forward =
        json!({"ns": NS, "type": "send", "targetId": "nobody", "action": "forward.json", "data": inner, "utid": 12});
    assert_eq!(send_json(&a, &forward), err_reply(12, "send", "No target connector with endpoint-id'nobody' found."));
}

/// respond needs no right, sends the token with type "response" and sourceId to the target, and answers the sender nothing.
#[test]
fn respond_forwards_as_response_without_reply() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    let request =
        format!(r#"{{"ns":"{NS}","type":"respond","targetId":"{b_id}","utid":5,"reqType":"send","data":"answer"}}"#);
    let r = send_raw(&a, &request);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let expected = format!(
        r#"{{"ns":"{NS}","type":"response","targetId":"{b_id}","utid":5,"reqType":"send","data":"answer","sourceId":"{a_id}"}}"#
    );
    assert_eq!(queued(&b), vec![expected]);
    assert_eq!(queued(&a), Vec::<String>::new());
    assert_eq!(
        sys(&a, "respond", r#","targetId":"nobody","utid":6"#),
        err_reply(6, "respond", "No target connector with endpoint-id 'nobody' found.")
    );
}

/// broadcast reaches every other connector without senderIncluded/responseRequested and with sourceId; the sender gets the std reply.
#[test]
fn broadcast_reaches_all_others() {
    let server = quiet_server();
    let (a, b, c) = (server.client(), server.client(), server.client());
    let a_id = a.open();
    b.open();
    c.open();
    must_login(&a, "guest", "guest");
    let request = format!(
        r#"{{"ns":"{NS}","type":"broadcast","sender":"guest","pool":"p","data":"hello","senderIncluded":false,"responseRequested":true,"utid":6}}"#
    );
    assert_eq!(send_raw(&a, &request).text(), ok_reply(6, "broadcast"));
    let seen = format!(
        r#"{{"ns":"{NS}","type":"broadcast","sender":"guest","pool":"p","data":"hello","utid":6,"sourceId":"{a_id}"}}"#
    );
    assert_eq!(queued(&b), vec![seen.clone()]);
    assert_eq!(queued(&c), vec![seen]);
    assert_eq!(queued(&a), Vec::<String>::new(), "the sender is excluded by default");
    // responseRequested:false: no reply, still delivered.
    assert_eq!(sys(&a, "broadcast", r#","data":"quiet","responseRequested":false"#), "");
    let seen = format!(r#"{{"ns":"{NS}","type":"broadcast","data":"quiet","sourceId":"{a_id}"}}"#);
    assert_eq!(queued(&b), vec![seen]);
    // Anonymous connectors lack the broadcast right.
    assert_eq!(sys(&b, "broadcast", r#","data":"x","utid":2"#), err_reply(2, "broadcast", "access denied"));
    assert_eq!(queued(&a), Vec::<String>::new());
    assert_eq!(queued(&c).len(), 1, "only the earlier quiet broadcast");
}

/// broadcast with senderIncluded:true makes the sender's own broadcast the body and queues the std reply after it.
#[test]
fn broadcast_sender_included() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    b.open();
    must_login(&a, "root", "root");
    let request = format!(r#"{{"ns":"{NS}","type":"broadcast","senderIncluded":true,"data":"all","utid":7}}"#);
    let seen = format!(r#"{{"ns":"{NS}","type":"broadcast","data":"all","utid":7,"sourceId":"{a_id}"}}"#);
    assert_eq!(send_raw(&a, &request).text(), seen);
    assert_eq!(queued(&a), vec![ok_reply(7, "broadcast")]);
    assert_eq!(queued(&b), vec![seen]);
}

/// broadcastToSharedSession reaches only connectors of the sender's session (senderIncluded kept) and always answers the std reply.
#[test]
fn broadcast_to_shared_session() {
    let server = quiet_server();
    let (a, b, c) = (server.client(), server.client(), server.client());
    let a_id = a.open_with("&sessionId=shared-S");
    b.open_with("&sessionId=shared-S");
    c.open();
    let request =
        format!(r#"{{"ns":"{NS}","type":"broadcastToSharedSession","data":"x","senderIncluded":false,"utid":4}}"#);
    assert_eq!(send_raw(&a, &request).text(), ok_reply(4, "broadcastToSharedSession"));
    let seen = format!(
        r#"{{"ns":"{NS}","type":"broadcastToSharedSession","data":"x","senderIncluded":false,"utid":4,"sourceId":"{a_id}"}}"#
    );
    assert_eq!(queued(&b), vec![seen]);
    assert_eq!(queued(&c), Vec::<String>::new(), "another session gets nothing");
    assert_eq!(queued(&a), Vec::<String>::new());
    // senderIncluded:true: the sender's copy is the body, the reply follows; responseRequested is ignored.
    let request = format!(
        r#"{{"ns":"{NS}","type":"broadcastToSharedSession","senderIncluded":true,"responseRequested":false,"utid":5}}"#
    );
    let seen = format!(
        r#"{{"ns":"{NS}","type":"broadcastToSharedSession","senderIncluded":true,"responseRequested":false,"utid":5,"sourceId":"{a_id}"}}"#
    );
    assert_eq!(send_raw(&a, &request).text(), seen);
    assert_eq!(queued(&a), vec![ok_reply(5, "broadcastToSharedSession")]);
    assert_eq!(queued(&b), vec![seen]);
    assert_eq!(queued(&c), Vec::<String>::new());
}

// ---- login, logout, getAuthorities -----------------------------------------------------------

/// A successful login answers uuid, username and the sorted authorities (guest 43, root 98 via `logon`).
#[test]
fn login_success_answers_uuid_username_authorities() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    a.open();
    b.open();
    let text = login_raw(&a, "guest", "guest");
    let prefix = ok_with(0, "login", r#","uuid":"guest","username":"guest","authorities":["#);
    assert!(text.starts_with(&prefix[..prefix.len() - 1]), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let auth: Vec<&str> = v["authorities"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(auth.len(), 43);
    assert!(auth.windows(2).all(|w| w[0] < w[1]), "sorted ascending: {auth:?}");
    assert!(auth.contains(&RIGHT_SEND) && auth.contains(&RIGHT_BROADCAST));
    assert_eq!(auth.last(), Some(&RIGHT_SEND));
    // The `logon` token: same handler, its own reqType, the request's utid.
    let text = sys(&b, "logon", r#","username":"root","password":"root","utid":11"#);
    let prefix = ok_with(11, "logon", r#","uuid":"root","username":"root","authorities":["#);
    assert!(text.starts_with(&prefix[..prefix.len() - 1]), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let auth = v["authorities"].as_array().unwrap();
    assert_eq!(auth.len(), 98);
    assert!(auth.contains(&json!("org.jwebsocket.plugins.system.getjvminfo")));
    assert_eq!(keys(&v), ["type", "code", "msg", "utid", "ns", "reqType", "uuid", "username", "authorities"]);
}

/// Bad credentials answer code -1 "BadCredentialsException: Bad credentials" plus `username`; a second login answers "is authenticated" without it.
#[test]
fn login_errors() {
    let server = Server::start(&[("LOGIN_MAX_FAILURES", "100")]);
    let a = server.client();
    a.open();
    let bad = "BadCredentialsException: Bad credentials";
    let expected =
        |user: &str| format!(r#"{},"username":"{user}"}}"#, err_reply(0, "login", bad).trim_end_matches('}'));
    assert_eq!(login_raw(&a, "guest", "wrong"), expected("guest"));
    assert_eq!(login_raw(&a, "nobody", "guest"), expected("nobody"));
    assert_eq!(login_raw(&a, "Guest", "guest"), expected("Guest"), "names are case-sensitive");
    // No account has an empty password, not even `anonymous`.
    assert_eq!(
        sys(&a, "login", r#","username":"anonymous","password":"","utid":3"#),
        format!(r#"{},"username":"anonymous"}}"#, err_reply(3, "login", bad).trim_end_matches('}'))
    );
    // A missing username gives `username:null`.
    assert_eq!(
        sys(&a, "login", r#","password":"guest","utid":4"#),
        format!(r#"{},"username":null}}"#, err_reply(4, "login", bad).trim_end_matches('}'))
    );
    must_login(&a, "guest", "guest");
    assert_eq!(login_raw(&a, "guest", "guest"), err_reply(0, "login", "is authenticated"));
    assert_eq!(login_raw(&a, "root", "root"), err_reply(0, "login", "is authenticated"));
    assert_eq!(
        sys(&a, "logon", r#","username":"root","password":"root","utid":5"#),
        err_reply(5, "logon", "is authenticated")
    );
}

/// Connectors of one sessionId share login state: the other connector gets the login and logout replies queued and is authenticated too.
#[test]
fn login_state_is_shared_by_the_session() {
    let server = quiet_server();
    let (a, b, c) = (server.client(), server.client(), server.client());
    a.open_with("&sessionId=shared-login");
    b.open_with("&sessionId=shared-login");
    let c_id = c.open();
    let reply = login_raw(&a, "guest", "guest");
    assert!(reply.starts_with(r#"{"type":"response","code":0"#), "{reply}");
    assert_eq!(queued(&b), vec![reply.clone()], "b gets the same login reply");
    assert_eq!(queued(&a), Vec::<String>::new());
    assert_eq!(queued(&c), Vec::<String>::new(), "another session gets nothing");
    assert_eq!(login_raw(&b, "root", "root"), err_reply(0, "login", "is authenticated"));
    // A connector opened into the logged-in session is welcomed with its user name.
    let d = server.client();
    assert_eq!(d.get("action=open&sessionId=shared-login").status, 200);
    let welcome: Value = serde_json::from_str(&queued(&d)[0]).unwrap();
    assert_eq!((welcome["username"].as_str(), welcome["anonymous"].as_bool()), (Some("guest"), Some(false)));
    let auth: Value = serde_json::from_str(&sys(&b, "getAuthorities", "")).unwrap();
    assert_eq!(auth["username"], "guest");
    // b holds the session's rights.
    assert_eq!(sys(&b, "send", &format!(r#","targetId":"{c_id}","data":"x","utid":1"#)), ok_reply(1, "send"));
    assert_eq!(queued(&c).len(), 1);
    let r = b.get("action=logout");
    assert_eq!(r.text(), ok_with(0, "logout", r#","anonymous":false"#));
    assert_eq!(queued(&a), vec![r.text()], "a gets the same logout reply");
    assert_eq!(queued(&d), vec![r.text()]);
    assert_eq!(sys(&a, "getAuthorities", ""), err_reply(-1, "getAuthorities", "not authenticated"));
}

/// After LOGIN_MAX_FAILURES failures a connector (and that user name) gets "Too many failed logins, retry in N seconds", even with the right password; another user elsewhere still logs in.
#[test]
fn login_rate_limit() {
    let server = Server::start(&[("LOGIN_MAX_FAILURES", "3"), ("BROADCAST_LOGIN_EVENT", "false")]);
    let (a, b, c) = (server.client(), server.client(), server.client());
    a.open();
    b.open();
    c.open();
    for _ in 0..3 {
        let text = login_raw(&a, "guest", "wrong");
        assert!(text.contains("BadCredentialsException: Bad credentials"), "{text}");
    }
    let limited = |text: &str| {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!((v["code"].as_i64(), v["reqType"].as_str()), (Some(-1), Some("login")), "{text}");
        assert_eq!(keys(&v)[..6], ["type", "code", "msg", "utid", "ns", "reqType"]);
        let msg = v["msg"].as_str().unwrap();
        let secs = msg
            .strip_prefix("Too many failed logins, retry in ")
            .and_then(|m| m.strip_suffix(" seconds"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("unexpected msg: {msg}"));
        assert!((1..=60).contains(&secs), "{msg}");
    };
    limited(&login_raw(&a, "guest", "guest"));
    limited(&login_raw(&a, "root", "root"));
    // The user name is limited too, from any connector.
    limited(&login_raw(&b, "guest", "guest"));
    // A different user on another connector is unaffected.
    let ok: Value = serde_json::from_str(&login_raw(&c, "root", "root")).unwrap();
    assert_eq!((ok["code"].as_i64(), ok["username"].as_str()), (Some(0), Some("root")));
    assert_eq!(a.get("action=whoami").json()["username"], Value::Null);
}

/// logout answers `anonymous:false`, clears the session storage and leaves the connection `anonymous` again, without rights.
#[test]
fn logout_clears_storage_and_makes_the_connection_anonymous() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    assert_eq!(a.get("action=logout").text(), err_reply(0, "logout", "not authenticated"));
    assert_eq!(sys(&a, "logoff", r#","utid":3"#), err_reply(3, "logoff", "not authenticated"));
    must_login(&a, "guest", "guest");
    assert_eq!(sys(&a, "sessionPut", r#","key":"k","value":1"#), ok_reply(-1, "sessionPut"));
    assert_eq!(sys(&a, "sessionPut", r#","key":"p","value":2,"public":true"#), ok_reply(-1, "sessionPut"));
    assert_eq!(a.get("action=logout").text(), ok_with(0, "logout", r#","anonymous":false"#));
    assert_eq!(queued(&a), Vec::<String>::new());
    // Everything was cleared; the name is `anonymous` again.
    assert_eq!(sys(&a, "sessionKeys", ""), ok_with(-1, "sessionKeys", r#","data":["$username"]"#));
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"$username""#),
        ok_with(-1, "sessionGet", r#","data":{"value":"anonymous","key":"$username"}"#)
    );
    let clients: Value = serde_json::from_str(&sys(&a, "getClients", "")).unwrap();
    assert!(clients["clients"].as_array().unwrap().contains(&json!(format!("anonymous@{a_id}"))), "{clients}");
    assert_eq!(a.get("action=whoami").json()["username"], Value::Null);
    assert_eq!(sys(&a, "send", &format!(r#","targetId":"{b_id}","data":"x""#)), err_reply(-1, "send", "access denied"));
    assert_eq!(sys(&a, "getAuthorities", ""), err_reply(-1, "getAuthorities", "not authenticated"));
    assert_eq!(a.get("action=logout").text(), err_reply(0, "logout", "not authenticated"));
    // A new login works, and `logoff` is the same handler with its own reqType.
    must_login(&a, "root", "root");
    assert_eq!(sys(&a, "logoff", r#","utid":4"#), ok_with(4, "logoff", r#","anonymous":false"#));
}

/// getAuthorities answers the user name and the login's authorities; without a login, "not authenticated".
#[test]
fn get_authorities_lists_the_login_authorities() {
    let server = quiet_server();
    let a = server.client();
    a.open();
    assert_eq!(sys(&a, "getAuthorities", r#","utid":1"#), err_reply(1, "getAuthorities", "not authenticated"));
    let login = a.login("root", "root");
    let text = sys(&a, "getAuthorities", r#","utid":2"#);
    let expected =
        ok_with(2, "getAuthorities", &format!(r#","username":"root","authorities":{}"#, login["authorities"]));
    assert_eq!(text, expected);
}

// ---- getClients ------------------------------------------------------------------------------

/// getClients lists "user@sourceId" of live connectors, all (mode 0), authenticated (1) or not authenticated (2).
#[test]
fn get_clients_by_mode() {
    let server = quiet_server();
    let (a, b, gone) = (server.client(), server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    gone.open();
    assert_eq!(gone.get("action=close").status, 200);
    must_login(&a, "guest", "guest");
    let all: Value = serde_json::from_str(&sys(&b, "getClients", r#","utid":1"#)).unwrap();
    assert_eq!(keys(&all), ["type", "code", "msg", "utid", "ns", "reqType", "clients", "count"]);
    let mut list: Vec<&str> = all["clients"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    list.sort();
    let mut expected = vec![format!("guest@{a_id}"), format!("anonymous@{b_id}")];
    expected.sort();
    assert_eq!(list, expected);
    assert_eq!(all["count"], 2);
    assert_eq!(all["code"], 0);
    assert_eq!(sys(&b, "getClients", r#","mode":0,"utid":2"#).len(), sys(&b, "getClients", r#","utid":2"#).len());
    assert_eq!(
        sys(&b, "getClients", r#","mode":1,"utid":3"#),
        ok_with(3, "getClients", &format!(r#","clients":["guest@{a_id}"],"count":1"#))
    );
    assert_eq!(
        sys(&a, "getClients", r#","mode":2,"utid":4"#),
        ok_with(4, "getClients", &format!(r#","clients":["anonymous@{b_id}"],"count":1"#))
    );
}

/// With ALLOW_ANONYMOUS=false a fresh connection has no name: no username/anonymous in the welcome, getClients "not logged in".
#[test]
fn get_clients_not_logged_in_without_anonymous() {
    let server = Server::start(&[("ALLOW_ANONYMOUS", "false")]);
    let (a, b) = (server.client(), server.client());
    assert_eq!(a.get("action=open").status, 200);
    let welcome: Value = serde_json::from_str(&queued(&a)[0]).unwrap();
    let a_id = welcome["sourceId"].as_str().unwrap().to_owned();
    assert_eq!(
        keys(&welcome),
        [
            "ns",
            "type",
            "vendor",
            "version",
            "engines",
            "sourceId",
            "maxFrameSize",
            "timeout",
            "protocolVersion",
            "subProtocol",
            "encodingFormats"
        ]
    );
    b.open();
    assert_eq!(sys(&a, "getClients", ""), err_reply(-1, "getClients", "not logged in"));
    must_login(&a, "guest", "guest");
    assert_eq!(
        sys(&a, "getClients", r#","utid":1"#),
        ok_with(1, "getClients", &format!(r#","clients":["guest@{a_id}"],"count":1"#))
    );
    assert_eq!(sys(&b, "getClients", ""), err_reply(-1, "getClients", "not logged in"));
    // Without anonymous login, logout carries no `anonymous` field and leaves no name.
    assert_eq!(a.get("action=logout").text(), ok_reply(0, "logout"));
    assert_eq!(sys(&a, "getClients", ""), err_reply(-1, "getClients", "not logged in"));
}

// ---- session storage -------------------------------------------------------------------------

/// sessionPut/Get/Has/Remove on the caller's own storage, with the documented data field orders.
#[test]
fn session_put_get_has_remove() {
    let server = quiet_server();
    let a = server.client();
    a.open();
    assert_eq!(sys(&a, "sessionPut", r#","key":"k","value":{"b":1,"a":[true]},"utid":1"#), ok_reply(1, "sessionPut"));
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"k","utid":2"#),
        ok_with(2, "sessionGet", r#","data":{"value":{"b":1,"a":[true]},"key":"k"}"#)
    );
    assert_eq!(
        sys(&a, "sessionHas", r#","key":"k""#),
        ok_with(-1, "sessionHas", r#","data":{"key":"k","exists":true}"#)
    );
    assert_eq!(
        sys(&a, "sessionHas", r#","key":"other""#),
        ok_with(-1, "sessionHas", r#","data":{"key":"other","exists":false}"#)
    );
    // Overwrite, with a falsy (but not null) value, then another.
    assert_eq!(sys(&a, "sessionPut", r#","key":"k","value":false"#), ok_reply(-1, "sessionPut"));
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"k""#),
        ok_with(-1, "sessionGet", r#","data":{"value":false,"key":"k"}"#)
    );
    assert_eq!(sys(&a, "sessionPut", r#","key":"k","value":"v2""#), ok_reply(-1, "sessionPut"));
    assert_eq!(
        sys(&a, "sessionRemove", r#","key":"k","utid":3"#),
        ok_with(3, "sessionRemove", r#","data":{"key":"k","value":"v2"}"#)
    );
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"k""#),
        err_reply(-1, "sessionGet", "The key 'k' does not exists in the targeted client session storage!")
    );
    assert_eq!(
        sys(&a, "sessionRemove", r#","key":"k""#),
        err_reply(-1, "sessionRemove", "The key 'k' does not exists!")
    );
    // Public entries live under `public::`.
    assert_eq!(sys(&a, "sessionPut", r#","key":"p","value":5,"public":true"#), ok_reply(-1, "sessionPut"));
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"p","public":true"#),
        ok_with(-1, "sessionGet", r#","data":{"value":5,"key":"public::p"}"#)
    );
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"p""#),
        err_reply(-1, "sessionGet", "The key 'p' does not exists in the targeted client session storage!")
    );
    assert_eq!(
        sys(&a, "sessionRemove", r#","key":"p","public":true"#),
        ok_with(-1, "sessionRemove", r#","data":{"key":"public::p","value":5}"#)
    );
}

/// Session token errors: missing key or value, and `$` keys are read-only ("The given key '$username', target a read only value!").
#[test]
fn session_errors_and_read_only_keys() {
    let server = quiet_server();
    let a = server.client();
    a.open();
    let key_required = "Argument 'key' is required!";
    for kind in ["sessionPut", "sessionGet", "sessionHas", "sessionRemove"] {
        assert_eq!(sys(&a, kind, r#","value":1,"utid":1"#), err_reply(1, kind, key_required), "{kind}");
    }
    let value_required = "Argument 'value' is required!";
    assert_eq!(sys(&a, "sessionPut", r#","key":"k""#), err_reply(-1, "sessionPut", value_required));
    assert_eq!(sys(&a, "sessionPut", r#","key":"k","value":null"#), err_reply(-1, "sessionPut", value_required));
    assert_eq!(
        sys(&a, "sessionPut", r#","key":"$username","value":"root","utid":2"#),
        err_reply(2, "sessionPut", "The given key '$username', target a read only value!")
    );
    // pollgate fix 3: every `$` key is read-only, $is_authenticated and $session_uid included.
    for key in ["$is_authenticated", "$session_uid", "$authorities", "$uuid", "$created_at"] {
        let msg = format!("The given key '{key}', target a read only value!");
        assert_eq!(
            sys(&a, "sessionPut", &format!(r#","key":"{key}","value":true"#)),
            err_reply(-1, "sessionPut", &msg)
        );
        assert_eq!(sys(&a, "sessionRemove", &format!(r#","key":"{key}""#)), err_reply(-1, "sessionRemove", &msg));
    }
    assert_eq!(
        sys(&a, "sessionRemove", r#","key":"$username""#),
        err_reply(-1, "sessionRemove", "The given key '$username', target a read only value!")
    );
    // Nothing changed: still anonymous and not authenticated.
    assert_eq!(
        sys(&a, "sessionGet", r#","key":"$username""#),
        ok_with(-1, "sessionGet", r#","data":{"value":"anonymous","key":"$username"}"#)
    );
    assert_eq!(sys(&a, "getAuthorities", ""), err_reply(-1, "getAuthorities", "not authenticated"));
    // The check runs after the prefix: the public variant is an ordinary key.
    assert_eq!(sys(&a, "sessionPut", r#","key":"$username","value":"x","public":true"#), ok_reply(-1, "sessionPut"));
}

/// Another client's public entries are readable by clientId (get/has/keys/getAll); its non-public entries are not.
#[test]
fn session_public_entries_of_another_client() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    b.open();
    assert_eq!(sys(&a, "sessionPut", r#","key":"color","value":"red","public":true"#), ok_reply(-1, "sessionPut"));
    assert_eq!(sys(&a, "sessionPut", r#","key":"secret","value":"s""#), ok_reply(-1, "sessionPut"));
    let from = format!(r#","clientId":"{a_id}""#);
    assert_eq!(
        sys(&b, "sessionGet", &format!(r#"{from},"key":"color","utid":1"#)),
        ok_with(1, "sessionGet", r#","data":{"value":"red","key":"public::color"}"#)
    );
    assert_eq!(
        sys(&b, "sessionGet", &format!(r#"{from},"key":"secret""#)),
        err_reply(-1, "sessionGet", "The key 'public::secret' does not exists in the targeted client session storage!")
    );
    // public:false cannot override the forced public lookup.
    assert_eq!(
        sys(&b, "sessionGet", &format!(r#"{from},"key":"secret","public":false"#)),
        err_reply(-1, "sessionGet", "The key 'public::secret' does not exists in the targeted client session storage!")
    );
    // pollgate fix 2: has/keys/getAll read the named client, not the caller.
    assert_eq!(
        sys(&b, "sessionHas", &format!(r#"{from},"key":"color""#)),
        ok_with(-1, "sessionHas", r#","data":{"key":"public::color","exists":true}"#)
    );
    assert_eq!(
        sys(&b, "sessionHas", &format!(r#"{from},"key":"secret""#)),
        ok_with(-1, "sessionHas", r#","data":{"key":"public::secret","exists":false}"#)
    );
    assert_eq!(
        sys(&b, "sessionHas", r#","key":"color","public":true"#),
        ok_with(-1, "sessionHas", r#","data":{"key":"public::color","exists":false}"#),
        "b's own storage has no color"
    );
    assert_eq!(sys(&b, "sessionKeys", &from), ok_with(-1, "sessionKeys", r#","data":["public::color"]"#));
    assert_eq!(sys(&b, "sessionGetAll", &from), ok_with(-1, "sessionGetAll", r#","data":{"public::color":"red"}"#));
    // The owner sees everything, or only the public part with public:true.
    let own: Value = serde_json::from_str(&sys(&a, "sessionKeys", "")).unwrap();
    let own: Vec<&str> = own["data"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for key in ["$username", "$session_uid", "$created_at", "public::color", "secret"] {
        assert!(own.contains(&key), "{key} in {own:?}");
    }
    assert_eq!(sys(&a, "sessionKeys", r#","public":true"#), ok_with(-1, "sessionKeys", r#","data":["public::color"]"#));
    let all: Value = serde_json::from_str(&sys(&a, "sessionGetAll", "")).unwrap();
    assert_eq!((all["data"]["secret"].as_str(), all["data"]["public::color"].as_str()), (Some("s"), Some("red")));
    assert_eq!(all["data"]["$username"], "anonymous");
    assert_eq!(
        sys(&a, "sessionGetAll", r#","public":true"#),
        ok_with(-1, "sessionGetAll", r#","data":{"public::color":"red"}"#)
    );
    // An unknown clientId.
    let unknown = "Client with id 'nobody' does not exists!";
    for kind in ["sessionGet", "sessionHas", "sessionKeys", "sessionGetAll"] {
        assert_eq!(sys(&b, kind, r#","clientId":"nobody","key":"color""#), err_reply(-1, kind, unknown), "{kind}");
    }
}

/// sessionGetMany returns each listed client's public entries (null when absent) and requires clients and keys.
#[test]
fn session_get_many() {
    let server = quiet_server();
    let (a, b) = (server.client(), server.client());
    let a_id = a.open();
    let b_id = b.open();
    assert_eq!(sys(&a, "sessionPut", r#","key":"color","value":"red","public":true"#), ok_reply(-1, "sessionPut"));
    assert_eq!(sys(&a, "sessionPut", r#","key":"size","value":3"#), ok_reply(-1, "sessionPut"));
    assert_eq!(sys(&b, "sessionPut", r#","key":"size","value":7,"public":true"#), ok_reply(-1, "sessionPut"));
    let text =
        sys(&b, "sessionGetMany", &format!(r#","clients":["{a_id}","{b_id}"],"keys":["color","size"],"utid":5"#));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys(&v), ["type", "code", "msg", "utid", "ns", "reqType", "data"]);
    assert_eq!(
        (v["code"].as_i64(), v["utid"].as_i64(), v["reqType"].as_str()),
        (Some(0), Some(5), Some("sessionGetMany"))
    );
    assert_eq!(
        v["data"],
        json!({a_id.clone(): {"color": "red", "size": null}, b_id.clone(): {"color": null, "size": 7}})
    );
    assert_eq!(
        sys(&a, "sessionGetMany", r#","keys":["color"]"#),
        err_reply(-1, "sessionGetMany", "Argument 'clients' is required!")
    );
    assert_eq!(
        sys(&a, "sessionGetMany", r#","clients":[],"keys":["color"]"#),
        err_reply(-1, "sessionGetMany", "Argument 'clients' is required!")
    );
    assert_eq!(
        sys(&a, "sessionGetMany", &format!(r#","clients":["{a_id}"]"#)),
        err_reply(-1, "sessionGetMany", "Argument 'keys' is required!")
    );
    assert_eq!(
        sys(&a, "sessionGetMany", r#","keys":[]"#),
        err_reply(-1, "sessionGetMany", "Argument 'clients' is required!"),
        "clients is checked first"
    );
}

// ---- events ----------------------------------------------------------------------------------

/// connect, login, logout and disconnect events reach the other clients (not the source) with the exact field order.
#[test]
fn events_reach_other_clients_in_field_order() {
    let server = Server::start(&[]);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    assert_eq!(
        queued(&a),
        vec![format!(r#"{{"ns":"{NS}","type":"event","name":"connect","sourceId":"{b_id}","clientCount":2}}"#)]
    );
    must_login(&b, "guest", "guest");
    assert_eq!(
        queued(&a),
        vec![format!(
            r#"{{"ns":"{NS}","type":"event","name":"login","username":"guest","clientCount":2,"sourceId":"{b_id}"}}"#
        )]
    );
    assert_eq!(b.get("action=logout").status, 200);
    assert_eq!(
        queued(&a),
        vec![format!(
            r#"{{"ns":"{NS}","type":"event","name":"logout","username":"guest","clientCount":2,"sourceId":"{b_id}"}}"#
        )]
    );
    assert_eq!(queued(&b), Vec::<String>::new(), "the source gets none of its own events");
    // A plain close (the HTTP action) gives only `disconnect`, counted without the leaver.
    assert_eq!(b.get("action=close").text(), "http.command.close");
    assert_eq!(
        queued(&a),
        vec![format!(r#"{{"ns":"{NS}","type":"event","name":"disconnect","sourceId":"{b_id}","clientCount":1}}"#)]
    );
}

/// A connector sharing the source's session gets the login reply copy first, then the login event.
#[test]
fn shared_session_gets_login_reply_then_event() {
    let server = Server::start(&[("BROADCAST_OPEN_EVENT", "false")]);
    let (a, b) = (server.client(), server.client());
    let a_id = a.open_with("&sessionId=shared-events");
    b.open_with("&sessionId=shared-events");
    let reply = login_raw(&a, "root", "root");
    let event = format!(
        r#"{{"ns":"{NS}","type":"event","name":"login","username":"root","clientCount":2,"sourceId":"{a_id}"}}"#
    );
    assert_eq!(queued(&b), vec![reply, event]);
    assert_eq!(queued(&a), Vec::<String>::new());
}

/// A session value ",connect,logout" under org.jwebsocket.plugins.system.events.exclude suppresses exactly those events for that client.
#[test]
fn events_exclude_suppresses_named_events() {
    let server = Server::start(&[]);
    let (a, watcher, b) = (server.client(), server.client(), server.client());
    watcher.open();
    a.open();
    assert_eq!(queued(&watcher).len(), 1, "connect of a");
    let put = format!(r#","key":"{EXCLUDE}","value":",connect,logout""#);
    assert_eq!(sys(&a, "sessionPut", &put), ok_reply(-1, "sessionPut"));
    let b_id = b.open();
    assert_eq!(queued(&a), Vec::<String>::new(), "connect suppressed");
    must_login(&b, "guest", "guest");
    assert_eq!(b.get("action=logout").status, 200);
    let login = format!(
        r#"{{"ns":"{NS}","type":"event","name":"login","username":"guest","clientCount":3,"sourceId":"{b_id}"}}"#
    );
    assert_eq!(queued(&a), vec![login.clone()], "login delivered, logout suppressed");
    let seen: Vec<Value> = queued(&watcher).iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let names: Vec<&str> = seen.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["connect", "login", "logout"], "others are unaffected");
    // Removing the setting restores the events.
    let r = sys(&a, "sessionRemove", &format!(r#","key":"{EXCLUDE}""#));
    assert!(r.starts_with(r#"{"type":"response","code":0"#), "{r}");
    let c = server.client();
    let c_id = c.open();
    assert_eq!(
        queued(&a),
        vec![format!(r#"{{"ns":"{NS}","type":"event","name":"connect","sourceId":"{c_id}","clientCount":4}}"#)]
    );
}

// ---- close token -----------------------------------------------------------------------------

/// close with timeout>0 answers the goodBye, emits logout (for `anonymous` too) and disconnect, and closes the connector.
#[test]
fn close_token_says_good_bye_and_closes() {
    let server = Server::start(&[]);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    queued(&a);
    let r = b.send(&json!({"ns": NS, "type": "close", "timeout": 1000, "utid": 3}));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!(
            r#"{{"type":"goodBye","ns":"{NS}","vendor":"jWebSocket.org","version":"1.0.0 RC3 (build 50223)","sourceId":"{b_id}","reason":"client"}}"#
        )
    );
    assert_eq!(
        queued(&a),
        vec![
            format!(
                r#"{{"ns":"{NS}","type":"event","name":"logout","username":"anonymous","clientCount":2,"sourceId":"{b_id}"}}"#
            ),
            format!(r#"{{"ns":"{NS}","type":"event","name":"disconnect","sourceId":"{b_id}","clientCount":1}}"#),
        ]
    );
    assert_eq!(b.sync().text(), r#"["http.command.close"]"#);
    for q in [
        "action=send&data={\"ns\":\"org.jwebsocket.plugins.system\",\"type\":\"ping\"}",
        "action=logout",
        "action=whoami",
    ] {
        let r = b.get(q);
        assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"), "{q}");
    }
}

/// close without timeout, with noGoodBye, noLogoutBroadcast or noDisconnectBroadcast answers an empty body and drops exactly those parts.
#[test]
fn close_token_options() {
    let server = Server::start(&[]);
    let watcher = server.client();
    watcher.open();
    let open = || {
        let c = server.client();
        let id = c.open();
        queued(&watcher);
        (c, id)
    };
    let logout = |id: &str, user: &str, count: i64| {
        format!(
            r#"{{"ns":"{NS}","type":"event","name":"logout","username":"{user}","clientCount":{count},"sourceId":"{id}"}}"#
        )
    };
    let disconnect =
        |id: &str| format!(r#"{{"ns":"{NS}","type":"event","name":"disconnect","sourceId":"{id}","clientCount":1}}"#);

    let (c, id) = open();
    assert_eq!(sys(&c, "close", ""), "");
    assert_eq!(queued(&watcher), vec![logout(&id, "anonymous", 2), disconnect(&id)]);
    assert_eq!(c.sync().text(), r#"["http.command.close"]"#);

    let (c, id) = open();
    assert_eq!(sys(&c, "close", r#","timeout":5,"noGoodBye":true,"noLogoutBroadcast":true"#), "");
    assert_eq!(queued(&watcher), vec![disconnect(&id)]);

    let (c, id) = open();
    assert_eq!(sys(&c, "close", r#","noDisconnectBroadcast":true"#), "");
    assert_eq!(queued(&watcher), vec![logout(&id, "anonymous", 2)]);
    assert_eq!(c.sync().text(), r#"["http.command.close"]"#);

    // A logged-in user's close names the user; the session is not cleared by it.
    let (c, id) = open();
    must_login(&c, "guest", "guest");
    queued(&watcher);
    assert_eq!(sys(&c, "close", ""), "");
    assert_eq!(queued(&watcher), vec![logout(&id, "guest", 2), disconnect(&id)]);
}

// ---- unknown and unanswerable tokens ---------------------------------------------------------

/// Unknown types, alloc/dealloc and a missing type get a code -1 response; a missing ns with a utid too; unknown ns and non-JSON get an empty 200.
#[test]
fn unknown_and_unanswerable_tokens() {
    let server = quiet_server();
    let a = server.client();
    a.open();
    let check = |text: String, utid: i64, req: Option<&str>, ns: bool| {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        let mut expected = vec!["type", "code", "msg", "utid"];
        if ns {
            expected.push("ns");
        }
        if req.is_some() {
            expected.push("reqType");
        }
        assert_eq!(keys(&v), expected, "{text}");
        assert_eq!(
            (v["type"].as_str(), v["code"].as_i64(), v["utid"].as_i64()),
            (Some("response"), Some(-1), Some(utid))
        );
        assert_eq!(v["reqType"].as_str(), req);
        assert!(!v["msg"].as_str().unwrap().is_empty() && v["msg"] != "ok", "{text}");
        if ns {
            assert_eq!(v["ns"], NS);
        }
    };
    check(sys(&a, "nonsense", r#","utid":3"#), 3, Some("nonsense"), true);
    check(sys(&a, "nonsense", ""), -1, Some("nonsense"), true);
    // pollgate fix 5: alloc/dealloc answer.
    check(sys(&a, "alloc", r#","utid":4"#), 4, Some("alloc"), true);
    check(sys(&a, "dealloc", r#","utid":5"#), 5, Some("dealloc"), true);
    check(send_raw(&a, &format!(r#"{{"ns":"{NS}","utid":6}}"#)).text(), 6, None, true);
    check(send_raw(&a, r#"{"type":"echo","data":"x","utid":7}"#).text(), 7, Some("echo"), false);
    // Nothing to answer: no ns and no utid, an unknown ns, data that is no JSON object.
    for data in [
        r#"{"type":"echo","data":"x"}"#,
        r#"{"ns":"com.example.nothing","type":"ping","utid":1}"#,
        "not json",
        r#"{"ns":"org.jwebsocket.plugins.system","type":"ping""#,
        "[1,2]",
    ] {
        let r = send_raw(&a, data);
        assert_eq!((r.status, r.body.len()), (200, 0), "{data}: {}", r.text());
    }
    // header is accepted without a reply.
    assert_eq!(sys(&a, "header", r#","clientType":"browser","encodingFormats":["base64"],"utid":8"#), "");
    assert_eq!(queued(&a), Vec::<String>::new());
}
