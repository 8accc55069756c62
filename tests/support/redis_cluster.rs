//! A real Redis Cluster for the tests: `redis-server` processes in cluster mode on loopback
//! ports, each in a scratch folder of its own (its `nodes.conf` and append-only file), joined
//! by `redis-cli --cluster create`, killed on drop. Besides starting it, [`RedisCluster`]
//! does to it what operators and failures do: kill or freeze a master, freeze or restart
//! every instance, move a slot to another master.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{free_port, program, wait_for_port};

/// Slots of a Redis Cluster (keys hash to `0..SLOTS`).
pub const SLOTS: u16 = 16384;

/// How long any step that waits on the cluster (a join, a failover, a restart) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// The error replies the tests can meet, as `redis-cli` prints them (first word).
const ERROR_CODES: &[&str] =
    &["ERR", "NOPERM", "MOVED", "ASK", "CLUSTERDOWN", "LOADING", "TRYAGAIN", "CROSSSLOT", "BUSYKEY", "IOERR", "NOAUTH"];

/// Whether `child` itself listens on `port` (within 20 s), or exited first (false). A port
/// picked free may be taken meanwhile by another instance, whose answer is not `child`'s:
/// the process id in `INFO server` tells them apart.
fn listening(port: u16, child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if pid_on(port) == Some(child.id()) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server (cluster mode) did not listen on {port} within 20 s");
}

/// The process id of the `redis-server` that answers on `port`, if one does.
fn pid_on(port: u16) -> Option<u32> {
    let out = run_cli(Some(port), &["INFO", "server"]);
    let info = String::from_utf8_lossy(&out.stdout);
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

/// Runs `redis-cli` (against `port` if given) with `args`; the raw output.
fn run_cli(port: Option<u16>, args: &[&str]) -> Output {
    let mut cmd = Command::new(program("redis-cli", "redis-tools"));
    if let Some(port) = port {
        cmd.args(["-p", &port.to_string()]);
    }
    cmd.args(args).stdin(Stdio::null()).output().expect("run redis-cli")
}

/// One `redis-server` of the cluster.
struct Instance {
    /// Its client port (the cluster bus is `bus_port`, chosen free too).
    port: u16,
    bus_port: u16,
    /// Its working folder: `nodes.conf` and the append-only file, kept across a restart.
    dir: tempfile::TempDir,
    /// `None` while it is stopped or killed.
    child: Option<Child>,
}

impl Instance {
    /// Starts it again on its ports (after a stop or a kill).
    fn spawn(&mut self) {
        let mut child = self.launch();
        wait_for_port(self.port, "redis-server (cluster mode)", &mut child);
        self.child = Some(child);
    }

    /// Starts it for the first time, on other free ports when the ones picked were taken
    /// meanwhile: tests pick free ports in parallel, and a port is free only until bound.
    fn spawn_first(&mut self) {
        for _ in 0..5 {
            let mut child = self.launch();
            if listening(self.port, &mut child) {
                self.child = Some(child);
                return;
            }
            let _ = std::fs::remove_file(self.dir.path().join("nodes.conf"));
            (self.port, self.bus_port) = (free_port(), free_port());
        }
        panic!("redis-server (cluster mode) did not start on five pairs of free ports:\n{}", self.log_tail());
    }

    fn launch(&self) -> Child {
        let dir = self.dir.path();
        Command::new(program("redis-server", "redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-port", &self.bus_port.to_string()])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", "1000"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            // A replica's full sync starts at once, not after the default 5 s wait for more
            // replicas to share it.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server")
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The last lines of its log, for a panic message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Masters (their ports) with the slot ranges each serves, as one instance sees them.
type Masters = Vec<(u16, Vec<(u16, u16)>)>;

/// One line of `CLUSTER NODES`, as one node sees the cluster.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// Flagged `fail` (or `fail?`, suspected) by the node asked.
    pub failing: bool,
    /// The master a replica follows (`-` for a master).
    pub master_id: String,
    /// The slot ranges it serves (a master), inclusive; open migrations left out.
    pub slots: Vec<(u16, u16)>,
}

impl NodeView {
    fn parse(line: &str) -> NodeView {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 8, "a CLUSTER NODES line: {line}");
        let address = fields[1].split(['@', ',']).next().unwrap();
        let port = address.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("a port in {line}"));
        let flags: Vec<&str> = fields[2].split(',').collect();
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (s.parse().unwrap(), s.parse().unwrap()),
            })
            .collect();
        NodeView {
            id: fields[0].to_owned(),
            port,
            master: flags.contains(&"master"),
            failing: flags.iter().any(|f| f.starts_with("fail")),
            master_id: fields[3].to_owned(),
            slots,
        }
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// A Redis Cluster of `masters × (1 + replicas_per_master)` instances on loopback.
pub struct RedisCluster {
    instances: Vec<Instance>,
}

impl RedisCluster {
    /// Starts the instances, joins them with `redis-cli --cluster create` (the first
    /// `masters` become masters, the rest their replicas) and waits until every instance
    /// reports `cluster_state:ok` with all 16384 slots served, every instance sees the same
    /// masters, and every replica is in sync with its master.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        assert!(masters >= 3, "redis-cli --cluster create needs at least 3 masters");
        let mut instances: Vec<Instance> = (0..masters * (1 + replicas_per_master))
            .map(|_| Instance {
                port: free_port(),
                bus_port: free_port(),
                dir: tempfile::tempdir().unwrap(),
                child: None,
            })
            .collect();
        for instance in &mut instances {
            instance.spawn_first();
        }
        let cluster = RedisCluster { instances };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.instances.iter().map(|i| format!("127.0.0.1:{}", i.port)));
        args.extend(["--cluster-replicas".into(), replicas_per_master.to_string(), "--cluster-yes".into()]);
        let out = run_cli(None, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok("the cluster's creation");
        assert_eq!(cluster.masters().len(), masters, "masters after the creation: {:?}", cluster.nodes());
        cluster
    }

    /// The seed URLs for `POLLGATE_REDIS_CLUSTER_NODES`: every instance, comma-separated.
    pub fn seeds(&self) -> String {
        let urls: Vec<String> = self.instances.iter().map(|i| format!("redis://127.0.0.1:{}", i.port)).collect();
        urls.join(",")
    }

    /// The client ports of every instance, masters and replicas, running or not.
    pub fn ports(&self) -> Vec<u16> {
        self.instances.iter().map(|i| i.port).collect()
    }

    /// The client ports of the instances that run.
    pub fn running_ports(&self) -> Vec<u16> {
        self.instances.iter().filter(|i| i.running()).map(|i| i.port).collect()
    }

    /// Runs one command on the instance at `port` with `redis-cli`; its output, trimmed.
    /// Fails the test if `redis-cli` fails or Redis answers an error.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.try_cli(port, args).unwrap_or_else(|e| panic!("redis-cli -p {port} {args:?}: {e}"))
    }

    /// The same, the failure as an error (for polling an instance that may be down).
    pub fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let out = run_cli(Some(port), args);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // Not on a terminal, redis-cli prints an error reply to stdout and exits 0.
        let error_reply = stdout.split([' ', '\n']).next().is_some_and(|code| ERROR_CODES.contains(&code));
        if !out.status.success() || error_reply {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(stdout)
    }

    /// Runs one command in cluster mode (`redis-cli -c`, which follows `MOVED` and `ASK`)
    /// through a running instance: what a command on a key needs.
    pub fn cli_on_key(&self, args: &[&str]) -> String {
        let port = self.running_ports()[0];
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.cli(port, &all)
    }

    /// Runs one command on every running instance (what `ACL SETUSER` and `CONFIG SET`
    /// need: a cluster does not propagate them); their outputs in the order of
    /// [`RedisCluster::running_ports`].
    pub fn cli_all(&self, args: &[&str]) -> Vec<String> {
        self.running_ports().into_iter().map(|port| self.cli(port, args)).collect()
    }

    /// The cluster as the running instance at `port` sees it.
    pub fn nodes_seen_by(&self, port: u16) -> Vec<NodeView> {
        self.cli(port, &["CLUSTER", "NODES"]).lines().map(NodeView::parse).collect()
    }

    /// The cluster as the first running instance sees it.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes_seen_by(self.running_ports()[0])
    }

    /// The ports of the masters that serve slots and are not failing, in ascending order.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> =
            self.nodes().iter().filter(|n| n.master && !n.failing && !n.slots.is_empty()).map(|n| n.port).collect();
        ports.sort_unstable();
        ports
    }

    /// The node id of the instance at `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"])
    }

    /// The master that serves `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let nodes = self.nodes();
        let owner = nodes.iter().find(|n| n.master && !n.failing && n.serves(slot));
        owner.unwrap_or_else(|| panic!("no master serves slot {slot}: {nodes:?}")).port
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.running_ports()[0];
        self.cli(port, &["CLUSTER", "KEYSLOT", key]).parse().unwrap()
    }

    /// Keys per master (`DBSIZE`), in the order of [`RedisCluster::masters`].
    pub fn dbsize_per_master(&self) -> Vec<(u16, u64)> {
        self.masters().into_iter().map(|port| (port, self.cli(port, &["DBSIZE"]).parse().unwrap())).collect()
    }

    /// The keys matching `pattern` on every master (`SCAN`, not `KEYS`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for port in self.masters() {
            let out = self.cli(port, &["--scan", "--pattern", pattern]);
            keys.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        keys
    }

    /// SIGKILL of the `i`th master of [`RedisCluster::masters`]: no shutdown, its replicas
    /// lose their link. Returns its port.
    pub fn kill_master(&mut self, i: usize) -> u16 {
        let port = self.masters()[i];
        let instance = self.instances.iter_mut().find(|x| x.port == port).unwrap();
        let mut child = instance.child.take().expect("the master runs");
        let _ = child.kill();
        let _ = child.wait();
        port
    }

    /// Freezes the `i`th master of [`RedisCluster::masters`] (SIGSTOP) for `pause`, then lets
    /// it go on (SIGCONT) and waits until the cluster is whole again. Its connections stay
    /// open and unanswered meanwhile, as on a host that hangs. Returns its port.
    pub fn pause_master(&mut self, i: usize, pause: Duration) -> u16 {
        let port = self.masters()[i];
        let instance = self.instances.iter().find(|x| x.port == port).unwrap();
        let pid = instance.child.as_ref().expect("the master runs").id().to_string();
        self.freeze(&[pid], pause, "the frozen master's return");
        port
    }

    /// Freezes every running instance (SIGSTOP) for `pause`, then lets them all go on
    /// (SIGCONT) and waits until the cluster is whole again: a Redis Cluster that hangs as a
    /// whole, its connections open and unanswered.
    pub fn pause_all(&mut self, pause: Duration) {
        let pids: Vec<String> =
            self.instances.iter().filter_map(|x| x.child.as_ref()).map(|c| c.id().to_string()).collect();
        self.freeze(&pids, pause, "the frozen cluster's return");
    }

    /// SIGSTOP to the processes `pids`, SIGCONT after `pause`, then waits until the cluster
    /// is whole again (`what` names the step in a panic).
    fn freeze(&self, pids: &[String], pause: Duration, what: &str) {
        assert!(Command::new("kill").arg("-STOP").args(pids).status().unwrap().success());
        std::thread::sleep(pause);
        assert!(Command::new("kill").arg("-CONT").args(pids).status().unwrap().success());
        self.wait_ok(what);
    }

    /// Waits until a replica has taken over every master that went away: every running
    /// instance reports `cluster_state:ok` with all slots served by running masters.
    pub fn wait_failover(&self) {
        self.wait_ok("the failover");
    }

    /// Stops every instance at once (SIGTERM: each writes its append-only file and exits),
    /// then starts each again on its port with its `nodes.conf` and data, and waits until
    /// the cluster is whole again. No instance is seen failing long enough (the node
    /// timeout) for a failover: all are down together, as after a power cut.
    pub fn restart_all(&mut self) {
        self.stop_all();
        self.start_all();
    }

    /// Stops every running instance (SIGTERM to all, then waits for each).
    pub fn stop_all(&mut self) {
        let mut stopped = Vec::new();
        for instance in &mut self.instances {
            if let Some(child) = instance.child.take() {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                stopped.push(child);
            }
        }
        for mut child in stopped {
            let _ = child.wait();
        }
    }

    /// Starts every stopped instance again with its data and waits until the cluster is
    /// whole.
    pub fn start_all(&mut self) {
        for instance in &mut self.instances {
            if !instance.running() {
                instance.spawn();
            }
        }
        self.wait_ok("the cluster's restart");
    }

    /// Moves `slot` from the master at `from` to the master at `to` as `redis-cli --cluster
    /// reshard` does: the target imports, the source migrates, the keys go over in batches
    /// (`CLUSTER GETKEYSINSLOT`, `MIGRATE`), `batch` keys at a time, while clients are
    /// redirected (`ASK` for keys already moved, `TRYAGAIN` for a command on keys on both
    /// sides), then every master is told the new owner. `pause` between batches keeps the
    /// slot migrating for a while, so that clients at work meet it. Returns the number of
    /// keys moved.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16, batch: usize, pause: Duration) -> usize {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_arg = slot.to_string();
        let step = |port: u16, args: &[&str], what: &str| {
            let out = self.cli(port, args);
            assert_eq!(out, "OK", "slot {slot}: {what} on {port}: {out}");
        };
        step(to, &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id], "SETSLOT IMPORTING");
        step(from, &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id], "SETSLOT MIGRATING");
        let to_port = to.to_string();
        let batch = batch.to_string();
        let mut moved = 0;
        let start = Instant::now();
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch]);
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            assert!(start.elapsed() < STEP_LIMIT, "slot {slot}: keys still to migrate after {STEP_LIMIT:?}");
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend_from_slice(&keys);
            let out = self.cli(from, &args);
            // NOKEY: the batch expired or was deleted meanwhile; the next one is read again.
            assert!(out == "OK" || out == "NOKEY", "slot {slot}: MIGRATE {keys:?}: {out}");
            moved += keys.len();
            std::thread::sleep(pause);
        }
        // The target first (it must own the slot before the source forgets it), then the
        // source, then every other master, so that none is left redirecting to the source.
        step(to, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id], "SETSLOT NODE");
        step(from, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id], "SETSLOT NODE");
        for port in self.masters() {
            if port != from && port != to {
                step(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id], "SETSLOT NODE");
            }
        }
        self.wait_until("the slot's move", || {
            for port in self.running_ports() {
                let nodes = self.nodes_seen_by(port);
                if !nodes.iter().any(|n| n.port == to && n.serves(slot)) {
                    return Err(format!("{port} does not see {to} serving slot {slot}"));
                }
            }
            Ok(())
        });
        moved
    }

    /// Waits until the cluster is whole: every running instance says `cluster_state:ok`
    /// and serves or knows all 16384 slots, all of them see the same masters with the same
    /// slots, none of those masters is down, and every running replica's link to its
    /// master is up. `what` names the step in the panic.
    pub fn wait_ok(&self, what: &str) {
        self.wait_until(what, || {
            let running = self.running_ports();
            let mut first: Option<Masters> = None;
            for &port in &running {
                let info = self.try_cli(port, &["CLUSTER", "INFO"])?;
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return Err(format!("{port}: {}", info.lines().take(4).collect::<Vec<_>>().join(" ")));
                }
                let nodes: Vec<NodeView> =
                    self.try_cli(port, &["CLUSTER", "NODES"])?.lines().map(NodeView::parse).collect();
                let mut masters: Masters = nodes
                    .iter()
                    .filter(|n| n.master && !n.slots.is_empty())
                    .map(|n| (n.port, n.slots.clone()))
                    .collect();
                masters.sort();
                if let Some((down, _)) = masters.iter().find(|(p, _)| !running.contains(p)) {
                    return Err(format!("{port} still has the stopped {down} serving slots"));
                }
                match &first {
                    None => first = Some(masters),
                    Some(seen) if *seen != masters => {
                        return Err(format!("{port} sees masters {masters:?}, another {seen:?}"))
                    }
                    Some(_) => {}
                }
                let me = nodes.iter().find(|n| n.port == port).ok_or(format!("{port} is not in its own view"))?;
                if !me.master {
                    let replication = self.try_cli(port, &["INFO", "replication"])?;
                    if !replication.contains("master_link_status:up") {
                        return Err(format!("replica {port}: its link to its master is not up"));
                    }
                }
            }
            Ok(())
        });
    }

    /// Polls `check` until it succeeds; fails the test after [`STEP_LIMIT`] with its last
    /// error and the end of each instance's log.
    fn wait_until(&self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let start = Instant::now();
        loop {
            let error = match check() {
                Ok(()) => return,
                Err(e) => e,
            };
            if start.elapsed() > STEP_LIMIT {
                let logs: Vec<String> =
                    self.instances.iter().map(|i| format!("-- redis {}:\n{}", i.port, i.log_tail())).collect();
                panic!("Redis Cluster: {what} not done within {STEP_LIMIT:?}: {error}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut c) = instance.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
