//! Operating pollgate: health and readiness endpoints, metrics, and the access log.

mod support;

use std::time::{Duration, Instant};

use support::cluster::RedisServer;
use support::*;

fn scrape(server: &Server) -> String {
    let r = get(server.addr, "/jWebSocket/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("application/openmetrics-text"));
    r.text()
}

fn access_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("pollgate::access")).collect()
}

/// `/healthz` answers while the process runs; `/readyz` while the store answers too.
#[test]
fn health_and_readiness_answer_on_a_running_node() {
    let server = Server::start(&[]);
    let r = get(server.addr, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(server.addr, "/readyz");
    assert_eq!((r.status, r.text().as_str()), (200, "ready"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// A node whose Redis is gone is alive but not ready, and ready again when Redis is back.
#[test]
fn readiness_follows_the_store() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&[("STORE", "redis"), ("REDIS_URL", &url), ("REDIS_PREFIX", "ready:")]);
    assert_eq!(get(server.addr, "/readyz").status, 200);
    redis.stop();
    let r = get(server.addr, "/readyz");
    assert_eq!((r.status, r.text().as_str()), (503, "Not ready: the store cannot be reached!"));
    assert_eq!(get(server.addr, "/healthz").status, 200, "alive all the same");
    let text = scrape(&server);
    assert!(metric_sample(&text, "pollgate_store_round_trips_total").unwrap() > 0.0, "{text}");
    assert!(metric_sample(&text, "pollgate_store_errors_total").unwrap() >= 1.0, "{text}");
    redis.restart();
    let start = Instant::now();
    let r = loop {
        let r = get(server.addr, "/readyz");
        if r.status == 200 || start.elapsed() > Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((r.status, r.text().as_str()), (200, "ready"), "recovers by itself");
}

/// One line per request: action, status, latency, sourceId and address; no secret.
#[test]
fn the_access_log_has_one_line_per_request_and_no_secret() {
    let server = Server::start(&[]);
    let c = server.client();
    let source_id = c.open(); // open + sync
    c.login("guest", "guest");
    c.get("action=whoami");
    get(server.addr, "/jWebSocket/http?action=sync&connectionId=unknown-one");
    get(server.addr, "/healthz");
    // The line is written after the response: give the last one a moment.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 6, "{log}");
    let open = lines[0];
    for field in ["action=\"open\"", "status=200", "address=\"127.0.0.1\"", "latency_us="] {
        assert!(open.contains(field), "{field} in {open}");
    }
    assert!(open.contains(&format!("source_id=\"{source_id}\"")), "{open}");
    assert!(lines[1].contains("action=\"sync\""), "{}", lines[1]);
    assert!(lines[2].contains("action=\"login\"") && lines[2].contains("method=POST"), "{}", lines[2]);
    assert!(lines[3].contains("action=\"whoami\""), "{}", lines[3]);
    assert!(lines[5].contains("path=/healthz") && lines[5].contains("status=200"), "{}", lines[5]);
    for secret in [c.connection_id.as_str(), "unknown-one", "password"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// With `log_format = "json"` each access line is one JSON object with the same fields;
/// `access_log = false` turns the lines off.
#[test]
fn the_access_log_in_json_and_off() {
    let server = Server::start(&[("LOG_FORMAT", "json")]);
    let c = server.client();
    let source_id = c.open();
    c.get("action=bogus");
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    let lines: Vec<serde_json::Value> =
        access_lines(&log).iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    let open = &lines[0]["fields"];
    assert_eq!(open["action"], "open");
    assert_eq!(open["status"], 200);
    assert_eq!(open["source_id"], source_id.as_str());
    assert!(open["latency_us"].is_u64(), "{open}");
    let bogus = &lines[2]["fields"];
    assert_eq!((bogus["action"].as_str(), bogus["status"].as_u64()), (Some("other"), Some(404)), "{bogus}");

    let quiet = Server::start(&[("ACCESS_LOG", "false")]);
    quiet.client().open();
    std::thread::sleep(Duration::from_millis(200));
    assert!(access_lines(&quiet.log()).is_empty(), "{}", quiet.log());
}

/// The metrics follow what clients do: connectors, sessions, requests, logins, packets,
/// held polls and closes.
#[test]
fn metrics_count_what_happens() {
    let server = Server::start(&[]);
    let (a, b) = (server.client(), server.client());
    a.open();
    let b_id = b.open();
    a.login("guest", "guest");
    b.login("guest", "wrong");
    let token = serde_json::json!({"ns": "org.jwebsocket.plugins.system", "type": "send", "targetId": b_id,
        "data": "hi", "responseRequested": false});
    a.send(&token);
    a.sync(); // the shipped configuration's events (b's connect) leave a's queue empty
              // A poll held while the scrape runs.
    let held = {
        let a = a.clone();
        std::thread::spawn(move || a.get("action=sync&wait=2000"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(&server);
    assert_eq!(metric_sample(&text, "pollgate_connectors"), Some(2.0), "{text}");
    assert_eq!(metric_sample(&text, "pollgate_sessions"), Some(2.0), "{text}");
    assert_eq!(metric_sample(&text, "pollgate_held_polls"), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, r#"pollgate_requests_total{action="open",status="200"}"#), Some(2.0), "{text}");
    assert_eq!(metric_sample(&text, r#"pollgate_logins_total{outcome="ok"}"#), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, r#"pollgate_logins_total{outcome="failed"}"#), Some(1.0), "{text}");
    // Two welcomes, the login replies' copies are not queued (a lone connector), and "hi".
    assert!(metric_sample(&text, "pollgate_packets_queued_total").unwrap() >= 3.0, "{text}");
    assert!(text.contains(r#"pollgate_request_duration_seconds_bucket{le="#), "{text}");
    held.join().unwrap();
    let got = b.sync();
    assert!(got.text().contains("hi"), "{}", got.text());
    b.get("action=close");
    let text = scrape(&server);
    assert_eq!(metric_sample(&text, "pollgate_held_polls"), Some(0.0), "{text}");
    assert_eq!(metric_sample(&text, "pollgate_connectors"), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, r#"pollgate_closes_total{reason="client"}"#), Some(1.0), "{text}");
    assert!(metric_sample(&text, "pollgate_packets_delivered_total").unwrap() >= 3.0, "{text}");
    assert!(metric_sample(&text, "pollgate_queue_depth_count").unwrap() >= 3.0, "{text}");
}

/// Admission: a refused open and an eviction are counted.
#[test]
fn metrics_count_refused_opens_and_evictions() {
    let reject = Server::start(&[("MAXCONNECTIONS", "1")]);
    reject.client().open();
    assert_eq!(reject.client().get("action=open").status, 503);
    assert_eq!(metric_sample(&scrape(&reject), "pollgate_admissions_rejected_total"), Some(1.0));
    let evict = Server::start(&[("MAXCONNECTIONS", "1"), ("ONMAXCONNECTIONS", "close")]);
    evict.client().open();
    evict.client().open();
    let text = scrape(&evict);
    assert_eq!(metric_sample(&text, "pollgate_evictions_total"), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, r#"pollgate_closes_total{reason="evicted"}"#), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, "pollgate_admissions_rejected_total"), Some(0.0), "{text}");
}
