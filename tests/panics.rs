//! A panic in one request, against a server run in this process with an application plugin
//! that panics: the request answers 500 and nothing else is harmed. The shipped binary has
//! no way to make a request panic, so the server is embedded here as an application would
//! embed it, with the panic hook the binary installs.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollgate::config::Config;
use pollgate::plugins::{Plugin, RequestContext, Token};
use serde_json::json;
use support::*;

/// The namespace of [`Panicker`].
const NS: &str = "com.example.panicker";
/// A field of every token the plugin gets; its panic message quotes the token.
const SECRET: &str = "secret-in-the-token";

/// A plugin with a bug: every token panics, and the message quotes the token.
struct Panicker;

#[async_trait::async_trait]
impl Plugin for Panicker {
    fn namespace(&self) -> &str {
        NS
    }

    async fn process_token(&self, _ctx: &mut RequestContext<'_>, token: &Token) {
        panic!("a plugin's bug, quoting its token: {token:?}");
    }
}

fn panic_token() -> String {
    json!({"ns": NS, "type": "anything", "utid": 7, "password": SECRET}).to_string()
}

/// What the server logs, as the binary writes it to stderr.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A server with [`Panicker`], the shipped configuration on a free loopback port, events
/// off, and the Redis store when the test command asks for it (`TEST_REDIS_URL`), serving
/// on `runtime` until the runtime is dropped. Logs at debug into the returned log.
fn start(runtime: &tokio::runtime::Runtime, fs_root: &std::path::Path) -> (SocketAddr, Log) {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt().with_env_filter("debug").with_ansi(false).with_writer(move || writer.clone()).init();
    // As the binary does: each panic logged once, without its message.
    pollgate::install_panic_hook();
    let mut env: Vec<(String, String)> = [
        ("port", "0"),
        ("sslport", "0"),
        ("bind_address", "127.0.0.1"),
        ("fs_root", fs_root.to_str().unwrap()),
        ("broadcast_open_event", "false"),
        ("broadcast_close_event", "false"),
        ("broadcast_login_event", "false"),
        ("broadcast_logout_event", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Ok(url) = std::env::var("TEST_REDIS_URL") {
        let prefix: u64 = rand::random();
        env.push(("store".into(), "redis".into()));
        env.push(("redis_url".into(), url));
        env.push(("redis_prefix".into(), format!("t{prefix:016x}:")));
    }
    let config = Config::load_from(None, &env, &[]).expect("the shipped configuration loads");
    let server = runtime.block_on(pollgate::server::Server::bind(config, vec![Arc::new(Panicker)])).expect("bind");
    let addr = server.local_addrs()[0];
    runtime.spawn(server.serve_until(std::future::pending()));
    (addr, log)
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/jWebSocket/metrics").text();
    metric_sample(&text, name).unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// A panic in one request answers 500 with the defined body and harms nothing else: the
/// same and other connectors keep working, a poll held meanwhile gets its packet, a retried
/// idempotent send runs again (its claim was given back), the server goes on serving, and
/// the log has one error line per panic, with its location and without the panic's message
/// or the connection id.
#[test]
fn a_panicking_request_answers_500_and_the_server_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = start(&runtime, dir.path());
    let (a, b) = (Client::new(addr), Client::new(addr));
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");

    // b holds a poll through the panics.
    let holder = {
        let b = b.clone();
        std::thread::spawn(move || b.get("action=sync&wait=25000"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, "pollgate_held_polls") < 1.0 {
        assert!(Instant::now() < deadline, "b's poll is not held");
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = a.post(&[("action", "send"), ("data", &panic_token())]);
    assert_eq!((r.status, r.text().as_str()), (500, "Internal server error!"));

    // An idempotent send that panics gives its claim back: its retry runs again (and
    // panics again) rather than answering 409 "in progress" for good. The claim is given
    // back by a task the panic spawns, so a retry right away may still find it running.
    let r = a.post(&[("action", "send"), ("seq", "1"), ("data", &panic_token())]);
    assert_eq!(r.status, 500, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let r = a.post(&[("action", "send"), ("seq", "1"), ("data", &panic_token())]);
        if r.status != 409 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(retried.status, 500, "{}", retried.text());
    let panics = 3;

    // The same connector works: an echo, and a send to b's held poll.
    let echo = a.system("echo", json!({"data": "still here"}));
    assert_eq!(echo["data"], "still here");
    let sent = a.system("send", json!({"targetId": b_id, "data": "after the panic"}));
    assert_eq!(sent["code"], 0, "{sent}");
    let held = holder.join().unwrap();
    assert_eq!(held.status, 200);
    assert!(held.text().contains("after the panic"), "{}", held.text());

    // Another connector, old and new, works.
    assert_eq!(b.system("echo", json!({"data": "b"}))["data"], "b");
    let c = Client::new(addr);
    c.open();
    assert_eq!(c.get("action=active").status, 204);
    assert_eq!(metric(addr, "pollgate_panics_total"), panics as f64);

    // One error line per panic, with its location, and no secret anywhere.
    let log = log.text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), panics, "{log}");
    for line in &errors {
        assert!(line.contains("request panicked") && line.contains("tests/panics.rs"), "{line}");
    }
    assert!(!log.contains("a plugin's bug"), "the panic's message was logged: {log}");
    for secret in [SECRET, &a.connection_id, &b.connection_id, &c.connection_id] {
        assert!(!log.contains(secret), "a secret was logged: {log}");
    }
}
