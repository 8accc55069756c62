//! The jWebSocket REST protocol of docs/PROTOCOL.md: dispatch order, bodies, status codes.

mod support;

use serde_json::json;
use support::*;

const ECHO: &str = r#"{"ns":"org.jwebsocket.plugins.system","type":"echo","data":"REST"}"#;

/// Open answers the maxFrameSize control message and queues the welcome for the first sync.
#[test]
fn open_then_sync_delivers_the_welcome() {
    let server = Server::start(&[]);
    let c = server.client();
    let r = c.get("action=open");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.text(),
        r#"{"ns":"org.jwebsocket.msgctrl","type":"info","name":"maxFrameSize","data":1048840,"jwsWrappedMsg":true}"#
    );
    let packets = c.sync().packets();
    assert_eq!(packets.len(), 1);
    let id = pollgate::protocol::connector_id(&c.connection_id, "127.0.0.1");
    let expected = format!(
        r#"{{"ns":"org.jwebsocket.plugins.system","type":"welcome","vendor":"jWebSocket.org","version":"1.0.0 RC3 (build 50223)","engines":[{{"id":"http0","class":"pollgate.HTTPEngine"}}],"sourceId":"{id}","maxFrameSize":1048840,"timeout":30,"username":"anonymous","protocolVersion":13,"subProtocol":null,"encodingFormats":["base64","zipBase64"],"anonymous":true}}"#
    );
    assert_eq!(packets[0], expected);
    assert_eq!(c.sync().text(), "[]", "returned packets are removed");
}

/// The dispatch order of A.3, with each status and body.
#[test]
fn dispatch_order_and_error_bodies() {
    let server = Server::start(&[]);
    let a = server.addr;
    let r = get(a, &format!("{ENDPOINT}?action=open"));
    assert_eq!((r.status, r.text().as_str()), (400, "Missing 'connectionId' parameter value!"));
    let c = server.client();
    // sync on an unknown connector: no existence check.
    let r = c.sync();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    // any other action on an unknown connector, even an unknown action: 400.
    for q in ["action=send&data=x", "action=nonsense", "action=close", "x=1"] {
        let r = c.get(q);
        assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"), "{q}");
    }
    // POST to an unknown connector: 411.
    let r = c.post(&[("action", "send"), ("data", ECHO)]);
    assert_eq!((r.status, r.text().as_str()), (411, "Invalid connection state!"));
    c.open();
    let r = c.get("action=open");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    for q in ["action=nonsense", "x=1"] {
        let r = c.get(q);
        assert_eq!((r.status, r.text().as_str()), (404, "Invalid request!"), "{q}");
    }
    let r = c.get("action=send&data=");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid request parameters!"));
    let r = c.get("action=login&username=guest");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid request parameters!"));
    let r = c.get("action=download");
    assert_eq!((r.status, r.text().as_str()), (400, "Missing filename parameter!"));
}

/// Raw, unencoded JSON in the query string, `+` as space, UTF-8 escapes: the PROTOCOL example.
#[test]
fn send_accepts_raw_json_in_the_query() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let r = c.get(&format!("action=send&data={ECHO}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"type":"response","code":0,"msg":"ok","utid":-1,"ns":"org.jwebsocket.plugins.system","reqType":"echo","data":"REST"}"#
    );
    let r = c
        .get(r#"action=send&data={"ns":"org.jwebsocket.plugins.system","type":"echo","data":"a+b%C3%A9<#>","utid":3}"#);
    assert_eq!(r.json()["data"], "a bé<#>");
    assert_eq!(r.json()["utid"], 3);
    // Raw spaces, as jWebSocket's Java client sends them (HttpURLConnection leaves them).
    let r = c.get(r#"action=send&data={"ns":"org.jwebsocket.plugins.system","type":"echo","data":"a b  c"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], "a b  c");
}

/// POST with a form body (its content type in any case, with parameters), POST with the
/// raw token as body, and the connection id header.
#[test]
fn post_forms_raw_bodies_and_the_connection_header() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let r = c.post(&[("action", "send"), ("data", ECHO)]);
    assert_eq!(r.json()["data"], "REST");
    let form = format!("connectionId={}&action=send&data={}", c.connection_id, enc(ECHO));
    let r = post(server.addr, ENDPOINT, "Application/X-WWW-Form-URLencoded; charset=UTF-8", form.as_bytes());
    assert_eq!(r.json()["data"], "REST");
    let target = format!("{ENDPOINT}?connectionId={}&action=send", c.connection_id);
    let r = post(server.addr, &target, "application/json", ECHO.as_bytes());
    assert_eq!(r.json()["reqType"], "echo");
    let r = post_with(
        server.addr,
        &format!("{ENDPOINT}?action=send"),
        &[("X-Pollgate-Connection", &c.connection_id), ("Content-Type", "text/plain")],
        ECHO.as_bytes(),
    );
    assert_eq!(r.json()["reqType"], "echo");
}

/// The first packet the server produces becomes the body; later ones are queued.
#[test]
fn first_packet_is_the_body_and_later_ones_are_queued() {
    let server = Server::start(&[]);
    let c = server.client();
    let me = c.open();
    assert_eq!(c.login("guest", "guest")["code"], 0);
    c.sync();
    // Sending to oneself: the forwarded token is the body, the std reply is queued.
    let token = json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": me, "data": "hi", "utid": 9});
    let r = c.send(&token);
    assert_eq!(r.json()["type"], "send");
    assert_eq!(r.json()["sourceId"], me.as_str());
    let queued = c.sync().packets();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0],
        r#"{"type":"response","code":0,"msg":"ok","utid":9,"ns":"org.jwebsocket.plugins.system","reqType":"send"}"#
    );
}

/// Unknown namespaces and non-JSON data get an empty 200.
#[test]
fn unanswerable_tokens_get_an_empty_body() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    for data in [r#"{"ns":"com.example.none","type":"x"}"#, "not json", "[1,2]"] {
        let r = c.post(&[("action", "send"), ("data", data)]);
        assert_eq!((r.status, r.body.len()), (200, 0), "{data}");
    }
}

/// Login and logout actions answer the exact bodies of A.4; utid defaults to 0.
#[test]
fn login_and_logout_actions() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let r = c.get("action=login&username=root&password=root");
    let text = r.text();
    assert!(
        text.starts_with(r#"{"type":"response","code":0,"msg":"ok","utid":0,"ns":"org.jwebsocket.plugins.system","reqType":"login","uuid":"root","username":"root","authorities":["org.jwebsocket.enterprise.plugins.watchdog.admin","#),
        "{text}"
    );
    assert_eq!(r.json()["authorities"].as_array().unwrap().len(), 98);
    let r = c.get("action=login&username=root&password=root&utid=4");
    assert_eq!(r.json()["msg"], "is authenticated");
    assert_eq!(r.json()["utid"], 4);
    let r = c.get("action=logout");
    assert_eq!(
        r.text(),
        r#"{"type":"response","code":0,"msg":"ok","utid":0,"ns":"org.jwebsocket.plugins.system","reqType":"logout","anonymous":false}"#
    );
    let r = c.get("action=logout&utid=2");
    assert_eq!(
        r.text(),
        r#"{"type":"response","code":-1,"msg":"not authenticated","utid":2,"ns":"org.jwebsocket.plugins.system","reqType":"logout"}"#
    );
    let r = c.post(&[("action", "login"), ("username", "root"), ("password", "wrong")]);
    assert_eq!(
        r.text(),
        r#"{"type":"response","code":-1,"msg":"BadCredentialsException: Bad credentials","utid":0,"ns":"org.jwebsocket.plugins.system","reqType":"login","username":"root"}"#
    );
}

/// Close answers `http.command.close`, removes the connector, and the id can open again.
#[test]
fn close_removes_the_connector_and_the_id_reopens() {
    let server = Server::start(&[]);
    let c = server.client();
    c.open();
    let r = c.get("action=close");
    assert_eq!((r.status, r.text().as_str()), (200, "http.command.close"));
    let r = c.get(&format!("action=send&data={ECHO}"));
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid connection state!"));
    assert_eq!(c.sync().text(), "[]");
    c.open();
}

/// whoami and active, pollgate's extensions.
#[test]
fn whoami_and_active() {
    let server = Server::start(&[]);
    let c = server.client();
    let me = c.open();
    let r = c.get("action=whoami");
    assert_eq!(r.json(), json!({"sourceId": me, "username": null, "authorities": [], "timeout": 30}));
    c.login("guest", "guest");
    let w = c.get("action=whoami").json();
    assert_eq!(w["username"], "guest");
    assert_eq!(w["authorities"].as_array().unwrap().len(), 43);
    let r = c.get("action=active");
    assert_eq!(r.status, 204);
}

/// Connectors that share a sessionId share login state; without one, each has its own.
#[test]
fn session_id_shares_login_state() {
    let server = Server::start(&[]);
    let (a, b, other) = (server.client(), server.client(), server.client());
    a.open_with("&sessionId=shared-1");
    b.open_with("&sessionId=shared-1");
    other.open();
    assert_eq!(a.login("guest", "guest")["code"], 0);
    // b got a copy of the login response and is logged in too.
    let packets: Vec<serde_json::Value> = b.sync().packets().iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let copy = packets.iter().find(|p| p["type"] == "response").expect("login response copy");
    assert_eq!((copy["reqType"].as_str(), copy["username"].as_str()), (Some("login"), Some("guest")));
    assert_eq!(b.get("action=whoami").json()["username"], "guest");
    assert_eq!(other.get("action=whoami").json()["username"], serde_json::Value::Null);
}
