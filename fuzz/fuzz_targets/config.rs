//! Fuzz target `config`: the configuration loader (`Config::load_from`: the TOML file, then
//! environment and flag overrides, key-by-key checks and validation).
//!
//! Checks beyond "no panic": an error is one line; a config that loads keeps every duration
//! the server derives from it in range (the arithmetic of `server.rs`, `engine.rs`,
//! `http/mod.rs` and the system plugin, done here with checked operations: an overflow there
//! would be a panic in a debug build and a wrong deadline in a release one); and a loaded
//! config written back as TOML loads to the same config.
//!
//! Input: the file's text, then optionally a NUL byte and override lines: `--key=value`
//! lines are flags, `KEY=value` lines environment variables (without `POLLGATE_`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pollgate::config::Config;

/// The file the loader reads, one per process (libFuzzer's `-fork`/`-jobs` run several).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("pollgate-fuzz-config-{}.toml", std::process::id())))
}

fn load(text: &[u8], env: &[(String, String)], flags: &[(String, String)]) -> Result<Config, String> {
    std::fs::write(scratch(), text).expect("write the scratch config");
    Config::load_from(Some(scratch()), env, flags).map_err(|e| e.0)
}

/// The durations the server computes from a config, each as the code does it, checked.
fn assert_derived_values_in_range(c: &Config) {
    let now_ms = pollgate::protocol::now_ms();
    let now = Instant::now();
    // config.rs: session_timeout() (from_secs_f64 panics on a value out of range).
    let timeout = c.session_timeout();
    assert!(c.timeout_minutes() >= 1);
    // server.rs, engine.rs: timeout_ms = session_timeout().as_millis() as i64; the Redis
    // key TTL is 2 * timeout_ms; the reaper compares now - timeout_ms.
    let timeout_ms = i64::try_from(timeout.as_millis()).ok();
    let ttl = timeout_ms.and_then(|t| t.checked_mul(2)).and_then(|t| t.checked_add(now_ms));
    assert!(ttl.is_some(), "timeout = {} overflows the server's millisecond arithmetic", c.timeout);
    // http/mod.rs: a held poll waits at most half the timeout and max_sync_wait from now.
    let wait = (timeout / 2).min(Duration::from_millis(c.max_sync_wait));
    assert!(now.checked_add(wait).is_some(), "max_sync_wait = {} overflows a deadline", c.max_sync_wait);
    // server.rs, engine.rs: record_retention_ms = session_retention as i64 * 1000.
    let retention =
        i64::try_from(c.session_retention).ok().and_then(|s| s.checked_mul(1000)).and_then(|ms| ms.checked_add(now_ms));
    assert!(retention.is_some(), "session_retention = {} overflows", c.session_retention);
    // system.rs: window = (login_window * 1000) as i64, compared with now.
    let window =
        c.login_window.checked_mul(1000).and_then(|w| i64::try_from(w).ok()).and_then(|w| w.checked_add(now_ms));
    assert!(window.is_some(), "login_window = {} overflows", c.login_window);
    // server.rs, http/mod.rs: read and shutdown timeouts become deadlines from now.
    for (key, secs) in [
        ("header_read_timeout", c.header_read_timeout),
        ("body_read_timeout", c.body_read_timeout),
        ("shutdown_timeout", c.shutdown_timeout),
    ] {
        assert!(now.checked_add(Duration::from_secs(secs)).is_some(), "{key} = {secs} overflows a deadline");
    }
}

fuzz_target!(|data: &[u8]| {
    let (file, overrides) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
    let (mut env, mut flags) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(overrides).lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key.strip_prefix("--") {
            Some(flag) => flags.push((flag.to_owned(), value.to_owned())),
            None => env.push((key.to_owned(), value.to_owned())),
        }
    }
    let config = match load(file, &env, &flags) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.contains('\n'), "a config error is one line: {e:?}");
            return;
        }
    };
    assert_derived_values_in_range(&config);
    // Written back (as the defaults are serialised), it loads to the same config.
    let written = toml::to_string(&config).expect("a loaded config serialises");
    let again = load(written.as_bytes(), &[], &[]).unwrap_or_else(|e| panic!("written back, it fails: {e}\n{written}"));
    let (a, b) = (serde_json::to_value(&config).unwrap(), serde_json::to_value(&again).unwrap());
    assert_eq!(a, b, "written back and loaded again, it changed:\n{written}");
});
