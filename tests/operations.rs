//! Operating pollgate: health and readiness endpoints, and the access log.

mod support;

use std::time::{Duration, Instant};

use support::cluster::RedisServer;
use support::*;

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
