//! The binary: configuration errors in one line, flags and environment, hash-password,
//! graceful shutdown.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn pollgate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollgate"));
    cmd.current_dir(repo()).args(args).env("POLLGATE_BIND_ADDRESS", "127.0.0.1").env("POLLGATE_PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().expect("run pollgate")
}

/// A bad configuration exits non-zero with one line naming the key or file.
#[test]
fn bad_configuration_exits_with_one_line() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--port", "http"], &[], "'port'"),
        (&["--no-such-key", "1"], &[], "--no-such-key"),
        (&[], &[("POLLGATE_ONMAXCONNECTIONS", "drop")], "'onmaxconnections'"),
        (&[], &[("POLLGATE_TIMEUOT", "5")], "POLLGATE_TIMEUOT"),
        (&["--config", "/no/such/pollgate.toml"], &[], "/no/such/pollgate.toml"),
        (&["--users-file", "/no/such/users.toml"], &[], "/no/such/users.toml"),
        (&["--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"], &[], "/no/cert.pem"),
        (&["--context", "jWebSocket"], &[], "'context'"),
    ];
    for (args, env, needle) in cases {
        let out = pollgate(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} should fail");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
}

/// A port in use is reported with the key that names it.
#[test]
fn port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = pollgate(&["--port", &port], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("'port'") && stderr.contains(&port), "{stderr}");
}

/// Flags beat environment variables: the flag's context is the one served.
#[test]
fn flags_override_the_environment() {
    let server = Server::start_with_args(&[("CONTEXT", "/env")], &["--context", "/flag"]);
    let c = server.client();
    let r = get(server.addr, &format!("/flag/http?connectionId={}&action=open", c.connection_id));
    assert_eq!(r.status, 200);
    let r = get(server.addr, &format!("/env/http?connectionId={}&action=open", c.connection_id));
    assert_eq!(r.status, 404);
}

/// hash-password prints a salted argon2id hash that differs each time.
#[test]
fn hash_password_prints_a_salted_hash() {
    let a = pollgate(&["hash-password", "secret"], &[]);
    let b = pollgate(&["hash-password", "secret"], &[]);
    let (a, b) = (String::from_utf8_lossy(&a.stdout), String::from_utf8_lossy(&b.stdout));
    assert!(a.starts_with("$argon2id$"), "{a}");
    assert_ne!(a, b, "salted");
}

/// The shipped users file holds hashes, never the demo passwords themselves.
#[test]
fn shipped_users_file_has_no_plain_passwords() {
    let text = std::fs::read_to_string(repo().join("conf/users.toml")).unwrap();
    assert!(text.contains("$argon2id$"));
    assert!(!text.contains("password = \""), "plain password entries");
    assert!(!text.contains("\"root\"\npassword_hash = \"root\""));
}

/// SIGTERM: held polls are answered (with systemStopping and the close command when
/// configured), and the process exits promptly with success.
#[test]
fn graceful_shutdown_answers_held_polls() {
    let mut server = Server::start(&[("NOTIFY_SYSTEM_STOPPING", "true")]);
    let c = server.client();
    c.open();
    c.sync();
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.get("action=sync&wait=20000"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = server.terminate(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "{status:?}");
    let r = waiter.join().unwrap();
    let packets = r.packets();
    assert_eq!(
        packets,
        vec![
            r#"{"ns":"org.jwebsocket.plugins.system","type":"event","name":"systemStopping"}"#.to_owned(),
            "http.command.close".to_owned()
        ]
    );
    assert!(start.elapsed() < Duration::from_secs(12));
}
