//! Real `redis-server` and `nginx` processes for the cluster tests, on loopback ports, each in
//! a scratch folder, killed on drop, and a [`Cluster`] of three pollgate nodes made of them,
//! over one `redis-server` or, with `TEST_REDIS_CLUSTER=1`, over a Redis Cluster
//! ([`super::redis_cluster`]). The test command installs both; a missing one fails the test
//! with the command that installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_cluster::RedisCluster;
use super::{Client, Server};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `child` listens on `port`; fails the test if it exits or takes over 20 s.
pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// The path of an installed program; fails the test with the command that installs it.
pub fn program(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run ./scripts/test.sh, or apt-get install {package}");
}

/// A `redis-server` with an append-only file synced after every write, so a stop and start
/// keeps its data.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut r = RedisServer { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(program("redis-server", "redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port(self.port, "redis-server", &mut child);
        self.child = Some(child);
    }

    /// Runs one command with `redis-cli`; returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(program("redis-cli", "redis-tools"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops Redis cleanly (SIGTERM: it writes its data and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Makes Redis refuse (`NOPERM`) every read of a session's storage under `prefix` (the
    /// `{prefix}s:*` hashes) to every client, while everything else works, writes to those
    /// included: a store that fails part-way through a request, after the step that finds
    /// the connector (which a stopped Redis fails first). Lifted by [`RedisServer::allow_all`].
    pub fn refuse_session_reads(&self, prefix: &str) {
        // A key pattern grants reads (`%R~`), writes (`%W~`) or both (`~`), and a command
        // that reads and writes a key needs one pattern granting both.
        let (others, s_other, sessions) =
            (format!("~{prefix}[^s]*"), format!("~{prefix}s[^:]*"), format!("%W~{prefix}s:*"));
        self.acl(&["resetkeys", &others, &s_other, &sessions]);
    }

    /// Makes Redis refuse (`NOPERM`) `commands` to every client. Lifted by
    /// [`RedisServer::allow_all`].
    pub fn refuse_commands(&self, commands: &[&str]) {
        let rules: Vec<String> = commands.iter().map(|c| format!("-{c}")).collect();
        self.acl(&rules.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Lifts every refusal: all keys, all commands.
    pub fn allow_all(&self) {
        self.acl(&["resetkeys", "~*", "+@all"]);
    }

    /// Changes the rules of the `default` user, the one every client (nodes, `redis-cli`)
    /// speaks as; they apply at once to connections already open.
    fn acl(&self, rules: &[&str]) {
        let mut args = vec!["ACL", "SETUSER", "default"];
        args.extend_from_slice(rules);
        assert_eq!(self.cli(&args), "OK", "ACL SETUSER default {rules:?}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nginx as a plain round-robin balancer (no stickiness) in front of `upstreams`.
pub struct Nginx {
    child: Option<Child>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = upstreams.iter().map(|a| format!("        server {a} max_fails=0;\n")).collect();
        let d = dir.path().display();
        // The proxy part mirrors conf/nginx-cluster.conf; the rest keeps nginx in this folder.
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream pollgate {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://pollgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(program("nginx", "nginx"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_for_port(port, "nginx", &mut child);
        Nginx { child: Some(child), addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the environment asks for the cluster tests to run over a Redis Cluster
/// (`TEST_REDIS_CLUSTER=1`) instead of one `redis-server`.
pub fn on_redis_cluster() -> bool {
    std::env::var("TEST_REDIS_CLUSTER").is_ok_and(|v| v == "1")
}

/// The Redis a [`Cluster`]'s nodes share: one server, or a Redis Cluster. What a test does to
/// "the" Redis has one meaning for each.
pub enum Redis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    /// One `redis-server`, or, when [`on_redis_cluster`], a Redis Cluster of three masters
    /// without replicas.
    pub fn from_environment() -> Redis {
        if on_redis_cluster() {
            Redis::Cluster(RedisCluster::start(3, 0))
        } else {
            Redis::Server(RedisServer::start())
        }
    }

    /// The `POLLGATE_*` settings that point a node at it.
    fn node_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Redis::Server(r) => vec![("REDIS_URL", r.url())],
            Redis::Cluster(c) => vec![("REDIS_CLUSTER_NODES", c.seeds())],
        }
    }

    /// Runs one command with `redis-cli`; its output, trimmed. On a Redis Cluster the
    /// command goes to the instance that serves its key (`redis-cli -c`); a command that
    /// must reach every instance needs [`Redis::cli_all`].
    pub fn cli(&self, args: &[&str]) -> String {
        match self {
            Redis::Server(r) => r.cli(args),
            Redis::Cluster(c) => c.cli_on_key(args),
        }
    }

    /// Runs one command on every instance (one on a single server); the outputs.
    pub fn cli_all(&self, args: &[&str]) -> Vec<String> {
        match self {
            Redis::Server(r) => vec![r.cli(args)],
            Redis::Cluster(c) => c.cli_all(args),
        }
    }

    /// Stops Redis cleanly: the server, or every instance of the cluster at once (SIGTERM:
    /// each writes its data and exits).
    pub fn stop(&mut self) {
        match self {
            Redis::Server(r) => r.stop(),
            Redis::Cluster(c) => c.stop_all(),
        }
    }

    /// Stops and starts it again, on the same ports with the same data: on a cluster every
    /// instance with its `nodes.conf` and append-only file, and the cluster whole again.
    pub fn restart(&mut self) {
        match self {
            Redis::Server(r) => r.restart(),
            Redis::Cluster(c) => c.restart_all(),
        }
    }

    /// Each process's `run_id` (one per instance of a cluster).
    pub fn run_ids(&self) -> Vec<String> {
        self.cli_all(&["INFO", "server"])
            .iter()
            .map(|info| info.lines().find_map(|l| l.strip_prefix("run_id:")).expect("a run_id").trim().to_owned())
            .collect()
    }

    /// How many partitions the store spreads its keys over here: one on a server, sixteen
    /// (hash tags) on a Redis Cluster.
    pub fn partitions(&self) -> usize {
        match self {
            Redis::Server(_) => 1,
            Redis::Cluster(_) => 16,
        }
    }

    /// The seeds of a Redis Cluster as the store's options take them; none on a server.
    pub fn cluster_nodes(&self) -> Vec<String> {
        match self {
            Redis::Server(_) => Vec::new(),
            Redis::Cluster(c) => c.seeds().split(',').map(str::to_owned).collect(),
        }
    }

    /// The URL of the server (unused on a Redis Cluster, whose seeds the store takes).
    pub fn url(&self) -> String {
        match self {
            Redis::Server(r) => r.url(),
            Redis::Cluster(_) => String::new(),
        }
    }

    /// The key the store names `name` under `prefix` (`t:` + `c:c1`): `prefix` + `name` on
    /// a server, `prefix` + a partition's hash tag + `name` on a Redis Cluster (found there
    /// by `SCAN`: it must exist, once).
    pub fn key(&self, prefix: &str, name: &str) -> String {
        match self {
            Redis::Server(_) => format!("{prefix}{name}"),
            Redis::Cluster(c) => {
                let pattern = format!("{prefix}{{*}}{name}");
                let keys = c.keys(&pattern);
                assert_eq!(keys.len(), 1, "the keys matching {pattern}: {keys:?}");
                keys[0].clone()
            }
        }
    }

    /// The channels matching `pattern` that a client subscribes to: pub/sub channels on a
    /// server, sharded ones (`PUBSUB SHARDCHANNELS`) on every master of a Redis Cluster.
    pub fn channels(&self, pattern: &str) -> usize {
        let count = |out: &str| out.lines().filter(|l| !l.is_empty()).count();
        match self {
            Redis::Server(r) => count(&r.cli(&["PUBSUB", "CHANNELS", pattern])),
            Redis::Cluster(c) => {
                c.masters().into_iter().map(|port| count(&c.cli(port, &["PUBSUB", "SHARDCHANNELS", pattern]))).sum()
            }
        }
    }

    /// How many times `command` ran (`INFO commandstats`), over every instance.
    pub fn calls(&self, command: &str) -> u64 {
        let field = format!("cmdstat_{command}:calls=");
        self.cli_all(&["INFO", "commandstats"])
            .iter()
            .filter_map(|stats| stats.lines().find_map(|l| l.strip_prefix(&field)))
            .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// The Redis Cluster, for a test that runs only on one.
    pub fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            Redis::Cluster(c) => c,
            Redis::Server(_) => panic!("this test needs a Redis Cluster"),
        }
    }
}

/// Three pollgate nodes sharing a real Redis (one `redis-server`, or a Redis Cluster), behind
/// a real `nginx` that round-robins every request with no stickiness, all on loopback.
pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Server>,
    /// The nodes' ports, kept so a node killed can come back on its own.
    pub ports: Vec<u16>,
    pub nginx: Nginx,
    /// The Redis key prefix the nodes share.
    pub prefix: String,
    /// Each node's settings that point it at Redis (the same Redis, maybe through a link of
    /// its own).
    redis_env: Vec<Vec<(&'static str, String)>>,
    extra: Vec<(&'static str, String)>,
}

impl Cluster {
    /// Starts the cluster over [`Redis::from_environment`] with `extra` as `POLLGATE_*`
    /// overrides on every node.
    pub fn start(extra: &[(&'static str, &str)]) -> Cluster {
        Self::start_on(Redis::from_environment(), extra)
    }

    /// The same over `redis`.
    pub fn start_on(redis: Redis, extra: &[(&'static str, &str)]) -> Cluster {
        let env = redis.node_env();
        Self::assemble(redis, vec![env.clone(), env.clone(), env], extra)
    }

    /// Starts the cluster over one `redis-server`, node `i` reaching it at
    /// `redis_url(i, redis)` (a link that can be cut). Always one server, even with
    /// `TEST_REDIS_CLUSTER=1`: a client of a Redis Cluster learns every instance's address
    /// from the cluster itself (`CLUSTER SLOTS`), the one each instance announces to all, so
    /// a link in front of a seed cuts only the first contact, and no address can be given to
    /// one pollgate node alone.
    pub fn start_with(
        extra: &[(&'static str, &str)],
        mut redis_url: impl FnMut(usize, &RedisServer) -> String,
    ) -> Cluster {
        let redis = RedisServer::start();
        let env = (0..3).map(|i| vec![("REDIS_URL", redis_url(i, &redis))]).collect();
        Self::assemble(Redis::Server(redis), env, extra)
    }

    fn assemble(redis: Redis, redis_env: Vec<Vec<(&'static str, String)>>, extra: &[(&'static str, &str)]) -> Cluster {
        let prefix = format!("c{:08x}:", rand::random::<u32>());
        let extra: Vec<(&'static str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes: Vec<Server> = (0..3).map(|i| Self::node(&redis_env[i], &prefix, ports[i], &extra)).collect();
        let nginx = Nginx::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
        Cluster { redis, nodes, ports, nginx, prefix, redis_env, extra }
    }

    fn node(redis_env: &[(&'static str, String)], prefix: &str, port: u16, extra: &[(&'static str, String)]) -> Server {
        let port = port.to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("STORE", "redis"),
            ("REDIS_PREFIX", prefix),
            ("PORT", &port),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            // The shipped configuration sends events for the demo; here they would only
            // get in the way of the packets under test.
            ("BROADCAST_OPEN_EVENT", "false"),
            ("BROADCAST_CLOSE_EVENT", "false"),
            ("BROADCAST_LOGIN_EVENT", "false"),
            ("BROADCAST_LOGOUT_EVENT", "false"),
        ];
        env.extend(redis_env.iter().map(|(k, v)| (*k, v.as_str())));
        env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        Server::start(&env)
    }

    /// Starts node `i` again on its port (after a kill).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i] = Self::node(&self.redis_env[i], &self.prefix, self.ports[i], &self.extra);
    }

    /// The prefix of connector `id`'s keys: the nodes' prefix on one server, that and its
    /// partition's hash tag on a Redis Cluster (`c0123abcd:{07}`).
    pub fn partition_of(&self, id: &str) -> String {
        let key = self.redis.key(&self.prefix, &format!("c:{id}"));
        key.strip_suffix(&format!("c:{id}")).unwrap().to_owned()
    }

    /// A raw client through the balancer.
    pub fn client(&self) -> Client {
        Client::new(self.nginx.addr)
    }
}
