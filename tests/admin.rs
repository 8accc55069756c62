//! The admin API under `{context}/admin/`: who may use it, sessions and connectors.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const TOKEN: &str = "an-admin-token-for-tests";
const ADMIN: &str = "/jWebSocket/admin/";

fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("ADMIN_TOKEN", TOKEN)];
    env.extend_from_slice(NO_EVENTS);
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// An admin request with a bearer token (`None`: no credentials) and optional JSON body.
fn admin(server: &Server, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Response {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {ADMIN}{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(server.addr, req.as_bytes())
}

fn ok(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = admin(server, method, path, Some(TOKEN), body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// The record of the session whose connectors include `source_id`.
fn session_of(server: &Server, source_id: &str) -> Value {
    let list = ok(server, "GET", "sessions?take=1000", None);
    let found = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["connectors"].as_array().unwrap().iter().any(|c| c == source_id));
    found.unwrap_or_else(|| panic!("no session with {source_id}: {list}")).clone()
}

/// No credentials, a wrong token, an anonymous or a guest connector: refused, and the answer
/// is the same whatever the resource.
#[test]
fn only_an_admin_gets_in_and_nothing_is_revealed() {
    let s = server(&[]);
    let unauthorized = json!({"error": "unauthorized"});
    for (token, path) in [(None, "sessions"), (Some("wrong-token-of-some-length"), "sessions"), (None, "no/such/thing")]
    {
        let r = admin(&s, "GET", path, token, None);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert_eq!(r.json(), unauthorized);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // A connector: anonymous (not logged in), then a guest (logged in, no admin right).
    let guest = s.client();
    guest.open();
    let as_connector =
        |c: &Client| get_with(s.addr, &format!("{ADMIN}sessions"), &[("X-Pollgate-Connection", &c.connection_id)]);
    assert_eq!(as_connector(&guest).status, 401);
    guest.login("guest", "guest");
    let r = as_connector(&guest);
    assert_eq!((r.status, r.json()), (403, json!({"error": "forbidden"})));
    // root holds the admin right.
    let root = s.client();
    root.open();
    root.login("root", "root");
    let r = as_connector(&root);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 2);
    // Without a configured token, no bearer token is accepted.
    let tokenless = Server::start(&[]);
    assert_eq!(admin(&tokenless, "GET", "sessions", Some(""), None).status, 401);
    assert_eq!(admin(&tokenless, "GET", "sessions", Some(TOKEN), None).status, 401);
}

/// Sessions are listed with their record, filtered and paged.
#[test]
fn sessions_are_listed_filtered_and_paged() {
    let s = server(&[]);
    let start = support_now_ms();
    let clients: Vec<Client> = (0..3).map(|_| s.client()).collect();
    let ids: Vec<String> = clients.iter().map(|c| c.open()).collect();
    clients[0].login("guest", "guest");
    clients[1].login("root", "root");
    let all = ok(&s, "GET", "sessions", None);
    assert_eq!(all["total"], 3, "{all}");
    let guest = session_of(&s, &ids[0]);
    assert_eq!(guest["user_name"], "guest");
    assert_eq!(guest["user_id"], "guest");
    assert_eq!(guest["active"], true);
    assert_eq!(guest["address"], "127.0.0.1");
    assert!(guest["open_time"].as_i64().unwrap() >= start, "{guest}");
    assert!(guest["request_time"].as_i64().unwrap() >= guest["open_time"].as_i64().unwrap());
    assert_eq!(guest["close_time"], Value::Null);
    assert!(guest["data"].as_object().unwrap().is_empty(), "internal entries are not data: {guest}");
    assert_eq!(ok(&s, "GET", "sessions?user=guest", None)["total"], 1);
    assert_eq!(ok(&s, "GET", "sessions?user=nobody", None)["total"], 0);
    assert_eq!(ok(&s, "GET", &format!("sessions?opened_after={start}"), None)["total"], 3);
    assert_eq!(ok(&s, "GET", &format!("sessions?opened_before={start}"), None)["total"], 0);
    assert_eq!(ok(&s, "GET", &format!("sessions?request_after={}", start + 3_600_000), None)["total"], 0);
    let page = ok(&s, "GET", "sessions?skip=1&take=1", None);
    assert_eq!((page["total"].as_u64(), page["sessions"].as_array().unwrap().len()), (Some(3), 1), "{page}");
    assert_eq!((page["skip"].as_u64(), page["take"].as_u64()), (Some(1), Some(1)));
    // Closed: listed inactive, with its close time.
    clients[2].get("action=close");
    let inactive = ok(&s, "GET", "sessions?active=false", None);
    assert_eq!(inactive["total"], 1, "{inactive}");
    assert!(inactive["sessions"][0]["close_time"].as_i64().is_some(), "{inactive}");
    assert_eq!(ok(&s, "GET", "sessions?active=true", None)["total"], 2);
}

fn support_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One session: read it, store data the client then reads, close it, delete it.
#[test]
fn a_session_is_read_given_data_closed_and_deleted() {
    let s = server(&[]);
    let c = s.client();
    let source_id = c.open();
    let id = session_of(&s, &source_id)["id"].as_str().unwrap().to_owned();
    let one = ok(&s, "GET", &format!("sessions/{id}"), None);
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["connectors"], json!([source_id]));

    let stored = ok(&s, "PUT", &format!("sessions/{id}/data"), Some(&json!({"color": "blue", "n": 3})));
    assert_eq!(stored["data"], json!({"color": "blue", "n": 3}));
    let seen = c.system("sessionGet", json!({"key": "color"}));
    assert_eq!(seen["data"]["value"], "blue", "{seen}");

    let closed = ok(&s, "POST", &format!("sessions/{id}/close"), None);
    assert_eq!(closed["closed"], 1);
    let r = c.sync();
    assert_eq!(r.packets(), ["http.command.close"]);
    assert_eq!(r.header("x-pollgate-close-reason"), Some("admin"));
    let after = ok(&s, "GET", &format!("sessions/{id}"), None);
    assert_eq!(after["active"], false, "{after}");
    assert!(after["close_time"].as_i64().is_some());
    // A closed session takes no data.
    assert_eq!(admin(&s, "PUT", &format!("sessions/{id}/data"), Some(TOKEN), Some(&json!({"a": 1}))).status, 409);

    let r = admin(&s, "DELETE", &format!("sessions/{id}"), Some(TOKEN), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = admin(&s, "GET", &format!("sessions/{id}"), Some(TOKEN), None);
    assert_eq!((r.status, r.json()), (404, json!({"error": "no such session"})));
}

/// Connectors are listed with their queue depth and last activity; one can be closed.
#[test]
fn connectors_are_listed_with_their_queues_and_closed_one_by_one() {
    let s = server(&[]);
    let (a, b) = (s.client(), s.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");
    for i in 0..3 {
        let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": b_id,
            "data": format!("m{i}"), "responseRequested": false});
        assert_eq!(a.send(&token).status, 200);
    }
    let list = ok(&s, "GET", "connectors", None);
    assert_eq!(list["total"], 2, "{list}");
    let row = list["connectors"].as_array().unwrap().iter().find(|c| c["id"] == b_id.as_str()).unwrap().clone();
    assert_eq!(row["queue_depth"], 3, "{row}");
    assert_eq!(row["address"], "127.0.0.1");
    assert!(row["last_activity"].as_i64().unwrap() >= row["open_time"].as_i64().unwrap());
    assert!(row["session_id"].is_string());

    assert_eq!(ok(&s, "POST", &format!("connectors/{b_id}/close"), None), json!({"closed": true}));
    let packets = b.sync().packets();
    assert_eq!(packets.last().map(String::as_str), Some("http.command.close"), "{packets:?}");
    let r = admin(&s, "POST", &format!("connectors/{b_id}/close"), Some(TOKEN), None);
    assert_eq!(r.status, 404, "already closed: {}", r.text());
    assert_eq!(ok(&s, "GET", "connectors", None)["total"], 1);
}

/// Malformed requests get 400/404/405 with a reason.
#[test]
fn bad_admin_requests_get_clear_errors() {
    let s = server(&[]);
    let c = s.client();
    let source_id = c.open();
    let id = session_of(&s, &source_id)["id"].as_str().unwrap().to_owned();
    for path in ["sessions?take=5000", "sessions?skip=-1", "sessions?active=maybe", "sessions?opened_after=yesterday"] {
        let r = admin(&s, "GET", path, Some(TOKEN), None);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    for body in [json!([1, 2]), json!("text"), json!({"$username": "root"})] {
        let r = admin(&s, "PUT", &format!("sessions/{id}/data"), Some(TOKEN), Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    assert_eq!(admin(&s, "DELETE", "connectors", Some(TOKEN), None).status, 405);
    assert_eq!(admin(&s, "GET", "sessions/nope", Some(TOKEN), None).status, 404);
    assert_eq!(admin(&s, "GET", "elsewhere", Some(TOKEN), None).status, 404);
    assert_eq!(ok(&s, "GET", "sessions", None)["total"], 1, "nothing changed");
}

/// A closed session's record goes after `session_retention`.
#[test]
fn closed_sessions_are_listed_for_the_retention_only() {
    let s = server(&[("SESSION_RETENTION", "1")]);
    let c = s.client();
    c.open();
    c.get("action=close");
    assert_eq!(ok(&s, "GET", "sessions?active=false", None)["total"], 1);
    let start = Instant::now();
    while ok(&s, "GET", "sessions", None)["total"] != 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the record outlived its retention");
        std::thread::sleep(Duration::from_millis(200));
    }
}
