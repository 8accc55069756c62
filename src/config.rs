//! The configuration: `conf/pollgate.toml` by default, every key overridable by a
//! `--kebab-case` flag and a `POLLGATE_UPPER_SNAKE` environment variable (flags win).
//!
//! Defaults live in [`Config::default`] and are repeated, with units, in the shipped file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "conf/pollgate.toml";

/// The longest time any setting may give, in seconds: a year. Nobody means a longer one, and
/// the bound keeps the server's deadline arithmetic (milliseconds in an `i64`, `Instant` plus
/// a duration) from overflowing: `timeout = 1e300` used to pass validation and then panic.
const MAX_DURATION_SECONDS: u64 = 365 * 24 * 3600;

/// A configuration problem, always one line naming the key or the file.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What `open` does when `maxconnections` connectors are live.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMaxConnections {
    /// Answer 503 `Too many connections!`.
    Reject,
    /// Close the least recently active connector to make room.
    Close,
}

/// Where connectors, sessions and queues live.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process; lost on restart.
    Memory,
    /// In Redis (`redis_url`), shared by every node of a cluster.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// How log lines are written (`log_format`).
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of a pollgate node. Field docs give the unit and the default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the listeners bind to. Default `0.0.0.0`.
    pub bind_address: String,
    /// Plain HTTP port. Default 8787; 0 picks a free port (printed at start).
    pub port: u16,
    /// HTTPS port, served only when `tls_cert` and `tls_key` are set. Default 9797; 0 = off.
    pub sslport: u16,
    /// PEM certificate chain for HTTPS. Default empty (no HTTPS).
    pub tls_cert: String,
    /// PEM private key for HTTPS. Default empty.
    pub tls_key: String,
    /// URL prefix of the endpoint (`{context}/http`) and of the static files. Default `/jWebSocket`.
    pub context: String,
    /// Origins allowed by the `Origin` check and CORS; `*` is a wildcard. Default `["*"]`.
    pub domains: Vec<String>,
    /// Minutes of inactivity after which a session's connectors are closed. Default 30.
    /// Fractions are allowed (0.05 = 3 seconds); at most 525600 (a year).
    pub timeout: f64,
    /// Largest request body and token, in bytes. Default 1048840.
    pub maxframesize: usize,
    /// Most live connectors. Default 10000.
    pub maxconnections: usize,
    /// `reject` (503) or `close` (evict the least recently active). Default `reject`.
    pub onmaxconnections: OnMaxConnections,
    /// Send the `systemStopping` event to every client at shutdown. Default false.
    pub notify_system_stopping: bool,
    /// Folder of static files served under `/` and `{context}/`. Default `static`.
    pub document_root: PathBuf,
    /// Worker threads; 0 = one per core. Default 0.
    pub max_threads: usize,
    /// Longest a `sync` with `wait` is held, in milliseconds. Default 30000; at most a year.
    pub max_sync_wait: u64,
    /// Most packets queued for one connector before it is closed (`queue overflow`). Default 1000.
    pub max_queue_packets: usize,
    /// Most bytes queued for one connector before it is closed (`queue overflow`). Default 4194304.
    pub max_queue_bytes: usize,
    /// Include the client address in the connector id (`md5(connectionId + ip)`). Default true.
    pub bind_connection_to_ip: bool,
    /// Peers whose `X-Forwarded-For` is believed (exact IP addresses). Default empty.
    pub trusted_proxies: Vec<String>,
    /// Root of the `download` aliases: `private/{user}/` and `public/`. Default `data/fs`.
    pub fs_root: PathBuf,
    /// Users, roles and password hashes. Default `conf/users.toml`.
    pub users_file: PathBuf,
    /// New connections get the name `anonymous` (not authenticated). Default true.
    pub allow_anonymous: bool,
    /// Bearer token of the admin API (`Authorization: Bearer …`). Default empty (none: only
    /// logged-in users with `admin_right`).
    pub admin_token: String,
    /// The right a logged-in user needs for the admin API. Default
    /// `org.jwebsocket.plugins.admin.shutdown` (jWebSocket's Administrator role holds it).
    pub admin_right: String,
    /// Seconds a closed session stays listable in the admin API. Default 600; at most a year.
    pub session_retention: u64,
    /// `memory` (one node) or `redis` (a cluster). Default `memory`.
    pub store: StoreKind,
    /// The Redis server of `store = "redis"`. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each); when not empty, the store
    /// of `store = "redis"` is that Redis Cluster and `redis_url` is not used. Default empty.
    pub redis_cluster_nodes: Vec<String>,
    /// Prefix of every key (and channel) this cluster uses in Redis. Default `pollgate:`.
    pub redis_prefix: String,
    /// Send the `connect` event to other clients. Default false.
    pub broadcast_open_event: bool,
    /// Send the `disconnect` event to other clients. Default false.
    pub broadcast_close_event: bool,
    /// Send the `login` event to other clients. Default false.
    pub broadcast_login_event: bool,
    /// Send the `logout` event to other clients. Default false.
    pub broadcast_logout_event: bool,
    /// Failed logins allowed per connector and per user name within `login_window`. Default 5.
    pub login_max_failures: u32,
    /// Window of the failed-login limit, in seconds. Default 60; at most a year.
    pub login_window: u64,
    /// Seconds a client has to send its request headers. Default 10; at most a year.
    pub header_read_timeout: u64,
    /// Seconds a client has to send its request body (a whole-body deadline, however the
    /// bytes trickle in). Default 30; at most a year.
    pub body_read_timeout: u64,
    /// Seconds a response write may wait for a client that does not read; the connection is
    /// then closed. Measured from the last progress, so a slow download that keeps moving is
    /// never cut. Default 60; at most a year.
    pub write_timeout: u64,
    /// Seconds shutdown waits for in-flight requests. Default 10; at most a year.
    pub shutdown_timeout: u64,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter. Default `info`.
    pub log_level: String,
    /// `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// One `info` line per request (target `pollgate::access`). Default true.
    pub access_log: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_address: "0.0.0.0".into(),
            port: 8787,
            sslport: 9797,
            tls_cert: String::new(),
            tls_key: String::new(),
            context: "/jWebSocket".into(),
            domains: vec!["*".into()],
            timeout: 30.0,
            maxframesize: 1_048_840,
            maxconnections: 10_000,
            onmaxconnections: OnMaxConnections::Reject,
            notify_system_stopping: false,
            document_root: "static".into(),
            max_threads: 0,
            max_sync_wait: 30_000,
            max_queue_packets: 1000,
            max_queue_bytes: 4 * 1024 * 1024,
            bind_connection_to_ip: true,
            trusted_proxies: Vec::new(),
            fs_root: "data/fs".into(),
            users_file: "conf/users.toml".into(),
            allow_anonymous: true,
            admin_token: String::new(),
            admin_right: "org.jwebsocket.plugins.admin.shutdown".into(),
            session_retention: 600,
            store: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_cluster_nodes: Vec::new(),
            redis_prefix: "pollgate:".into(),
            broadcast_open_event: false,
            broadcast_close_event: false,
            broadcast_login_event: false,
            broadcast_logout_event: false,
            login_max_failures: 5,
            login_window: 60,
            header_read_timeout: 10,
            body_read_timeout: 30,
            write_timeout: 60,
            shutdown_timeout: 10,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            access_log: true,
        }
    }
}

impl Config {
    /// Loads the file (`path`, or [`DEFAULT_CONFIG_FILE`] when it exists), then applies the
    /// `POLLGATE_*` environment variables, then `flags` (`("port", "8080")`, names in
    /// kebab or snake case).
    pub fn load(path: Option<&Path>, flags: &[(String, String)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("POLLGATE_").map(|k| (k.to_ascii_lowercase(), v)))
            .collect();
        Self::load_from(path, &env, flags)
    }

    /// [`Config::load`] with the environment given explicitly (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
        flags: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => read_table(p)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => read_table(Path::new(DEFAULT_CONFIG_FILE))?,
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
        for (source, pairs) in [("environment variable POLLGATE_", env), ("flag --", flags)] {
            for (raw_key, raw_value) in pairs {
                let key = raw_key.replace('-', "_").to_ascii_lowercase();
                let Some(default) = defaults.get(&key) else {
                    let shown = if source.starts_with("flag") {
                        raw_key.replace('_', "-")
                    } else {
                        raw_key.to_ascii_uppercase()
                    };
                    return Err(ConfigError(format!("config: unknown key in {source}{shown}")));
                };
                table.insert(key, override_value(default, raw_value));
            }
        }
        // Check key by key first, so that an error names its key in one line.
        for (key, value) in &table {
            if !defaults.contains_key(key) {
                return Err(ConfigError(format!("config: unknown key '{key}'")));
            }
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            if let Err(e) = Config::deserialize(toml::Value::Table(one)) {
                return Err(ConfigError(format!("config: bad value for '{key}': {}", one_line(&e.to_string()))));
            }
        }
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError(format!("config: {}", one_line(&e.to_string()))))?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks the types cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("config: bad value for '{key}': {why}")));
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            return bad("admin_token", "use at least 16 characters (or \"\" for none)");
        }
        if !self.context.starts_with('/') || self.context.ends_with('/') && self.context.len() > 1 {
            return bad("context", "must start with '/' and not end with '/'");
        }
        if !(self.timeout > 0.0 && self.timeout * 60.0 <= MAX_DURATION_SECONDS as f64) {
            return bad("timeout", "must be a positive number of minutes, at most 525600 (a year)");
        }
        let seconds = [
            ("max_sync_wait", self.max_sync_wait / 1000),
            ("session_retention", self.session_retention),
            ("login_window", self.login_window),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ];
        for (key, value) in seconds {
            if value > MAX_DURATION_SECONDS {
                return bad(key, "at most a year (31536000 seconds)");
            }
        }
        if self.maxframesize < 64 {
            return bad("maxframesize", "must be at least 64 bytes");
        }
        if self.maxconnections == 0 {
            return bad("maxconnections", "must be at least 1");
        }
        if self.max_queue_packets == 0 || self.max_queue_bytes == 0 {
            return bad("max_queue_packets", "queue limits must be at least 1");
        }
        if self.bind_address.parse::<std::net::IpAddr>().is_err() {
            return bad("bind_address", "not an IP address");
        }
        for proxy in &self.trusted_proxies {
            if proxy.parse::<std::net::IpAddr>().is_err() {
                return bad("trusted_proxies", &format!("'{proxy}' is not an IP address"));
            }
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return bad("tls_cert", "tls_cert and tls_key must be set together");
        }
        if self.header_read_timeout == 0 || self.body_read_timeout == 0 {
            return bad("header_read_timeout", "read timeouts must be at least 1 second");
        }
        if self.write_timeout == 0 {
            return bad("write_timeout", "must be at least 1 second");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad("log_level", "not a level or tracing filter");
        }
        Ok(())
    }

    /// The inactivity timeout as a duration.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout * 60.0)
    }

    /// The timeout in whole minutes, as the welcome token reports it (at least 1).
    pub fn timeout_minutes(&self) -> i64 {
        (self.timeout.ceil() as i64).max(1)
    }

    /// Whether HTTPS is configured.
    pub fn tls_enabled(&self) -> bool {
        self.sslport != 0 && !self.tls_cert.is_empty()
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config: cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError(format!("config: {}: {}", path.display(), one_line(&e.to_string()))))
}

/// Turns a flag or environment string into a TOML value shaped like the key's default:
/// strings stay strings, lists accept `a,b,c` or TOML `["a","b"]`, the rest parse as TOML.
fn override_value(default: &toml::Value, raw: &str) -> toml::Value {
    let parsed = || format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    match default {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Array(_) if !raw.trim_start().starts_with('[') => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        toml::Value::Float(_) => match parsed() {
            Some(toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            Some(v) => v,
            None => toml::Value::String(raw.to_owned()),
        },
        _ => parsed().unwrap_or_else(|| toml::Value::String(raw.to_owned())),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_are_the_jwebsocket_ones() {
        let c = Config::default();
        assert_eq!((c.port, c.sslport, c.context.as_str()), (8787, 9797, "/jWebSocket"));
        assert_eq!((c.timeout, c.maxframesize, c.maxconnections), (30.0, 1_048_840, 10_000));
        assert_eq!(c.onmaxconnections, OnMaxConnections::Reject);
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let f = file("port = 1000\ntimeout = 5\n");
        let c = Config::load_from(
            Some(f.path()),
            &pairs(&[("port", "2000"), ("domains", "http://a,http://b")]),
            &pairs(&[("port", "3000"), ("max-sync-wait", "10")]),
        )
        .unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.timeout, 5.0);
        assert_eq!(c.max_sync_wait, 10);
        assert_eq!(c.domains, vec!["http://a", "http://b"]);
    }

    #[test]
    fn errors_name_the_key_in_one_line() {
        let f = file("port = \"x\"\n");
        let e = Config::load_from(Some(f.path()), &[], &[]).unwrap_err().0;
        assert!(e.contains("'port'") && !e.contains('\n'), "{e}");
        let e = Config::load_from(Some(file("").path()), &[], &pairs(&[("no-such", "1")])).unwrap_err().0;
        assert!(e.contains("--no-such"), "{e}");
        let e = Config::load_from(Some(file("").path()), &pairs(&[("bogus", "1")]), &[]).unwrap_err().0;
        assert!(e.contains("POLLGATE_BOGUS"), "{e}");
        let e = Config::load_from(Some(file("onmaxconnections = \"drop\"").path()), &[], &[]).unwrap_err().0;
        assert!(e.contains("'onmaxconnections'"), "{e}");
        let e = Config::load_from(Some(Path::new("/no/such/file.toml")), &[], &[]).unwrap_err().0;
        assert!(e.contains("/no/such/file.toml"), "{e}");
    }

    /// Durations past a year are refused by name; they used to load and then overflow the
    /// server's deadline arithmetic (`timeout = 1e300` panicked in `session_timeout`; found
    /// by the `config` fuzz target).
    #[test]
    fn durations_are_bounded_by_a_year() {
        for (text, key) in [
            ("timeout = 1e300", "'timeout'"),
            ("timeout = 525601", "'timeout'"),
            ("session_retention = 9223372036854775807", "'session_retention'"),
            ("login_window = 31536001", "'login_window'"),
            ("header_read_timeout = 9223372036854775807", "'header_read_timeout'"),
            ("body_read_timeout = 31536001", "'body_read_timeout'"),
            ("write_timeout = 31536001", "'write_timeout'"),
            ("shutdown_timeout = 31536001", "'shutdown_timeout'"),
            ("max_sync_wait = 9223372036854775807", "'max_sync_wait'"),
        ] {
            let e = Config::load_from(Some(file(text).path()), &[], &[]).unwrap_err().0;
            assert!(e.contains(key) && e.contains("a year"), "{text}: {e}");
        }
        let c = Config::load_from(Some(file("timeout = 525600\nsession_retention = 31536000").path()), &[], &[]);
        assert_eq!(c.unwrap().session_timeout(), Duration::from_secs(MAX_DURATION_SECONDS));
    }
}
