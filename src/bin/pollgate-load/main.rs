//! `pollgate-load`: a bounded load generator for a running pollgate, with the modes and the
//! figure names of the peers' load generator (`benches/peers/rust/src/bin/peer-load`), so that
//! `scripts/bench-compare.sh` can put pollgate and the peers side by side.
//!
//! Every run is bounded: warmup + duration for the timed modes, fixed waits for the others,
//! and a watchdog (`--max-runtime`) that ends the process in any case. Only loopback targets
//! are accepted. Each run prints one human line and one `RESULT {json}` line.

mod client;
mod http;
mod modes;
mod soak;
mod stats;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;

use crate::client::{Options, Session};
use crate::http::{Conn, Res};
use crate::stats::{cpu_cores, sample, ProcSample, Summary};

#[derive(Parser, Debug)]
#[command(about = "Bounded load generator for a running pollgate (loopback only)")]
struct Cli {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: SocketAddr,
    /// The endpoint path: `{context}/http`.
    #[arg(long, default_value = "/jWebSocket/http")]
    path: String,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warmup seconds (load applied, not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Server pid: sample its CPU and RSS (from /proc) over the window. A comma-separated
    /// list sums the CPU and RSS of all (a Redis Cluster's masters, say); the first is the
    /// one whose descriptors and RSS the churn, idle and soak modes follow.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Free-text label echoed in the result line.
    #[arg(long, default_value = "")]
    label: String,
    /// Concurrent connection setups (TCP connect + open + first sync).
    #[arg(long, default_value_t = 128)]
    setup_concurrency: usize,
    /// Short-request timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    req_timeout: f64,
    /// How long a held poll may wait (`wait=MS`), milliseconds.
    #[arg(long, default_value_t = 25_000)]
    wait_ms: u64,
    /// Hard limit on the whole process, seconds (watchdog).
    #[arg(long, default_value_t = 90.0)]
    max_runtime: f64,
    /// Account the sending clients log in with (sending needs the `send` or `broadcast`
    /// right, which anonymous connections lack). Echo clients share one session and so
    /// log in once.
    #[arg(long, default_value = "guest")]
    user: String,
    #[arg(long, default_value = "guest")]
    password: String,
    /// Tokio worker threads (default: CPUs in the affinity mask).
    #[arg(long)]
    threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug, Clone)]
enum Mode {
    /// Open + first sync (the welcome) in a loop on keep-alive connections.
    Handshake {
        #[arg(short = 'c', long, default_value_t = 64)]
        clients: usize,
        /// Also close each connection afterwards (`action=close`).
        #[arg(long)]
        close: bool,
    },
    /// N clients in a closed loop: POST a `send` token addressed to themselves, then
    /// long-poll until the server's response to it arrives (2 HTTP requests per op).
    Echo {
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: usize,
        /// Message size in bytes (approx.).
        #[arg(long, default_value_t = 16)]
        payload: usize,
        /// Acknowledged syncs (`ack=N`).
        #[arg(long)]
        ack: bool,
        /// Idempotent sends (`seq=N`).
        #[arg(long)]
        seq: bool,
        /// The reply in the send's own response (a system `echo` token): one request per
        /// round trip, as a jWebSocket client echoes. Without it, the reply is queued and a
        /// long-poll brings it back (two requests: the queue and the wake-up are measured).
        #[arg(long)]
        direct: bool,
    },
    /// N receivers hold polls; senders send to one receiver at a time and wait for its
    /// poll to return the packet (delivery latency).
    Targeted {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// Concurrent senders, each with one packet in flight.
        #[arg(long, default_value_t = 1)]
        senders: usize,
    },
    /// N receivers hold polls; one sender broadcasts rounds and waits for every receiver
    /// to get each round (fan-out latency).
    Broadcast {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// Upper bound on rounds (the run also stops at warmup + duration).
        #[arg(long, default_value_t = 1_000_000)]
        rounds: usize,
    },
    /// N clients each holding a long-poll; server RSS growth per client (needs --pid).
    Idle {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// Seconds to wait after the last client is holding before the RSS sample.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Extra seconds to keep holding after the sample (second sample at the end).
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
        /// As many clients as the server has descriptors left under its limit (in place of
        /// -c), as far as this process's own limit allows: a poll on every descriptor the
        /// server does not use itself.
        #[arg(long)]
        fill: bool,
    },
    /// Open N connections, sync once, abandon them without closing; then wait for the
    /// server's reaper and report its RSS and the connectors left (needs --pid, and a
    /// login allowed to call getClients).
    Churn {
        #[arg(short = 'c', long, default_value_t = 10_000)]
        clients: usize,
        /// Bursts, each reaped before the next.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Clients of a first burst, reaped before the start is sampled (0: none). It
        /// faults in the code a fresh server runs for the first time.
        #[arg(long, default_value_t = 100)]
        warm_up: usize,
        /// Concurrent openers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Longest wait for the reaper, seconds.
        #[arg(long, default_value_t = 60.0)]
        reap_wait: f64,
        /// Seconds between the last connector's close and the final RSS sample (closed
        /// connectors are kept for min(timeout, 5 min)).
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
        /// Account that counts the connectors (getClients needs a login).
        #[arg(long, default_value = "root")]
        admin: String,
        #[arg(long, default_value = "root")]
        admin_password: String,
    },
    /// For --duration seconds: connection churn (closed, abandoned, abandoned mid-poll),
    /// held long-polls and broadcasts, with a row of the server's RSS, connectors and open
    /// descriptors every --interval seconds (needs --pid; run the server with a short
    /// timeout). Then waits for the reaper; fails unless connectors and descriptors are back
    /// at their start. Raise --max-runtime above duration + reap-wait.
    Soak {
        /// Clients holding long-polls (each recycles its connection every 16 polls).
        #[arg(long, default_value_t = 50)]
        pollers: usize,
        /// Tasks opening and ending connections in a loop.
        #[arg(long, default_value_t = 4)]
        churners: usize,
        /// Pause of a churner between two connections, milliseconds.
        #[arg(long, default_value_t = 50)]
        churn_pause_ms: u64,
        /// Time between two broadcasts, milliseconds.
        #[arg(long, default_value_t = 500)]
        broadcast_ms: u64,
        /// Seconds between two rows of the table.
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
        /// Longest wait for the reaper after the load, seconds.
        #[arg(long, default_value_t = 120.0)]
        reap_wait: f64,
        /// Descriptors above the start still counted as back at the start.
        #[arg(long, default_value_t = 2)]
        fd_slack: u64,
    },
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Handshake { .. } => "handshake",
            Mode::Echo { .. } => "echo",
            Mode::Targeted { .. } => "targeted",
            Mode::Broadcast { .. } => "broadcast",
            Mode::Idle { .. } => "idle",
            Mode::Churn { .. } => "churn",
            Mode::Soak { .. } => "soak",
        }
    }
}

/// What every mode needs to reach the server.
pub struct Ctx {
    pub addr: SocketAddr,
    pub path: String,
    pub pid: Option<u32>,
    /// Every process sampled over the window (`--pid`), `pid` first.
    pub pids: Vec<u32>,
    pub timeout: Duration,
    pub wait_ms: u64,
    /// The account of clients that send.
    pub user: String,
    pub password: String,
    /// Bounds concurrent connection setups.
    pub setup_sem: Arc<Semaphore>,
}

fn main() {
    let cli = Cli::parse();
    if !cli.addr.ip().is_loopback() {
        eprintln!("refusing non-loopback target {}", cli.addr);
        std::process::exit(2);
    }
    // Watchdog: the process ends whatever state the server is in.
    let max = Duration::from_secs_f64(cli.max_runtime);
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!("watchdog: --max-runtime reached, exiting");
        std::process::exit(3);
    });
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(t) = cli.threads {
        runtime.worker_threads(t);
    }
    let runtime = runtime.build().expect("tokio runtime");
    // On a worker, not on this thread: a mode's own loop (broadcast's rounds, say) then shares
    // the worker with the clients' tasks instead of being woken across threads for each
    // message they pass it (a futex wake and a context switch per delivery).
    let code = runtime.block_on(async { tokio::spawn(run(cli)).await.unwrap_or(1) });
    // Exit without waiting for held polls to end.
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let ctx = Arc::new(Ctx {
        addr: cli.addr,
        path: cli.path.clone(),
        pid: cli.pid.first().copied(),
        pids: cli.pid.clone(),
        timeout: Duration::from_secs_f64(cli.req_timeout),
        wait_ms: cli.wait_ms,
        user: cli.user.clone(),
        password: cli.password.clone(),
        setup_sem: Arc::new(Semaphore::new(cli.setup_concurrency.max(1))),
    });
    let window =
        modes::Window { warmup: Duration::from_secs_f64(cli.warmup), duration: Duration::from_secs_f64(cli.duration) };
    let mut out = Report::new(&cli);
    let result = match cli.mode.clone() {
        Mode::Handshake { clients, close } => {
            modes::timed(&ctx, &mut out, clients, window, modes::Op::Handshake { close }).await
        }
        Mode::Echo { clients, payload, ack, seq, direct } => {
            let op = modes::Op::Echo { payload, options: Options { ack, seq }, direct };
            modes::timed(&ctx, &mut out, clients, window, op).await
        }
        Mode::Targeted { clients, senders } => modes::targeted(&ctx, &mut out, clients, senders, window).await,
        Mode::Broadcast { clients, rounds } => modes::broadcast(&ctx, &mut out, clients, rounds, window).await,
        Mode::Idle { clients, settle, hold, fill } => modes::idle(&ctx, &mut out, clients, settle, hold, fill).await,
        Mode::Churn { clients, rounds, warm_up, concurrency, reap_wait, settle, admin, admin_password } => {
            let account = (admin.as_str(), admin_password.as_str());
            modes::churn(&ctx, &mut out, clients, rounds, warm_up, concurrency, reap_wait, settle, account).await
        }
        Mode::Soak { pollers, churners, churn_pause_ms, broadcast_ms, interval, reap_wait, fd_slack } => {
            let options = soak::SoakOptions {
                duration: Duration::from_secs_f64(cli.duration),
                pollers,
                churners,
                churn_pause: Duration::from_millis(churn_pause_ms),
                broadcast_every: Duration::from_millis(broadcast_ms),
                interval: Duration::from_secs_f64(interval),
                reap_wait: Duration::from_secs_f64(reap_wait),
                fd_slack,
            };
            soak::soak(&ctx, &mut out, options).await
        }
    };
    if let Err(e) = result {
        out.kv("fatal", e.to_string());
        out.print();
        return 1;
    }
    out.print();
    0
}

/// The figures of one run, in the order they were added.
pub struct Report {
    fields: Vec<(String, serde_json::Value)>,
}

/// Milliseconds with three decimals, from microseconds.
pub fn ms(us: f64) -> f64 {
    (us / 1000.0 * 1000.0).round() / 1000.0
}

/// Megabytes with one decimal, from kilobytes.
pub fn mb(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

impl Report {
    fn new(cli: &Cli) -> Self {
        let mut r = Report { fields: Vec::new() };
        r.kv("label", cli.label.clone());
        r.kv("mode", cli.mode.name());
        r.kv("addr", cli.addr.to_string());
        r
    }

    pub fn kv(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.fields.push((key.to_owned(), value.into()));
    }

    /// count, mean and percentiles of a latency summary, each key prefixed.
    pub fn latency(&mut self, prefix: &str, s: &Summary) {
        self.kv(&format!("{prefix}count"), s.count as u64);
        self.kv(&format!("{prefix}mean_ms"), ms(s.mean_us));
        self.kv(&format!("{prefix}p50_ms"), ms(s.p50_us.into()));
        self.kv(&format!("{prefix}p90_ms"), ms(s.p90_us.into()));
        self.kv(&format!("{prefix}p99_ms"), ms(s.p99_us.into()));
        self.kv(&format!("{prefix}p999_ms"), ms(s.p999_us.into()));
        self.kv(&format!("{prefix}max_ms"), ms(s.max_us.into()));
    }

    /// Server and load-tool CPU over the window, and the server's RSS at its end.
    pub fn processes(&mut self, server: Span, me: Span) {
        if let Some((a, b)) = server {
            self.kv("server_cpu_cores", (cpu_cores(&a, &b) * 100.0).round() / 100.0);
            self.kv("server_rss_mb", mb(b.rss_kb));
            self.kv("server_hwm_mb", mb(b.hwm_kb));
        }
        if let Some((a, b)) = me {
            self.kv("loadgen_cpu_cores", (cpu_cores(&a, &b) * 100.0).round() / 100.0);
        }
    }

    /// Server CPU per operation: robust even when the load tool is the bottleneck.
    pub fn cpu_per_op(&mut self, server: &Span, window_s: f64, ops: u64) {
        if let Some((a, b)) = server {
            if ops > 0 {
                let us = cpu_cores(a, b) * window_s * 1e6 / ops as f64;
                self.kv("server_cpu_us_per_op", (us * 10.0).round() / 10.0);
            }
        }
    }

    /// Writes the report to stdout (a closed pipe is not an error worth a panic).
    fn print(&self) {
        let human: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                _ => format!("{k}={v}"),
            })
            .collect();
        let object: serde_json::Map<String, serde_json::Value> = self.fields.iter().cloned().collect();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", human.join(" "));
        let _ = writeln!(out, "RESULT {}", serde_json::Value::Object(object));
    }
}

/// Samples of one process at the start and at the end of a window.
pub type Span = Option<(ProcSample, ProcSample)>;

/// Samples the servers' (summed) and the load tool's CPU and RSS at `from` and at `until`.
pub fn spawn_sampler(pids: Vec<u32>, from: Instant, until: Instant) -> tokio::task::JoinHandle<(Span, Span)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let s0 = sample_all(&pids);
        let m0 = sample(None);
        tokio::time::sleep_until(until.into()).await;
        let s1 = sample_all(&pids);
        let m1 = sample(None);
        (s0.zip(s1), m0.zip(m1))
    })
}

/// The sum of the samples of `pids`; `None` without pids or when one is gone.
fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    let mut all: Option<ProcSample> = None;
    for pid in pids {
        let one = sample(Some(*pid))?;
        all = Some(match all {
            None => one,
            Some(sum) => ProcSample {
                cpu_ticks: sum.cpu_ticks + one.cpu_ticks,
                rss_kb: sum.rss_kb + one.rss_kb,
                hwm_kb: sum.hwm_kb + one.hwm_kb,
                at: one.at,
            },
        });
    }
    all
}

/// Opens a TCP connection and a pollgate connection on it, under the setup semaphore.
pub async fn connect_one(ctx: &Ctx, options: Options, session_id: Option<&str>) -> Res<(Conn, Session)> {
    let _permit = ctx.setup_sem.acquire().await?;
    let mut conn = Conn::open(ctx.addr, ctx.timeout).await?;
    let session = Session::open(&mut conn, &ctx.path, options, session_id).await?;
    Ok((conn, session))
}

/// Opens a connection of its own session and logs it in with `--user`.
pub async fn connect_sender(ctx: &Ctx, options: Options, session_id: Option<&str>) -> Res<(Conn, Session)> {
    let (mut conn, mut session) = connect_one(ctx, options, session_id).await?;
    session.login(&mut conn, &ctx.user, &ctx.password).await?;
    Ok((conn, session))
}

/// Opens `n` connections concurrently; reports the setup time and errors. With `senders`,
/// the first logs in and the others join its session, so that all may send.
pub async fn connect_many(
    ctx: &Arc<Ctx>,
    out: &mut Report,
    n: usize,
    options: Options,
    senders: bool,
) -> Vec<(Conn, Session)> {
    let t0 = Instant::now();
    let mut ok = Vec::with_capacity(n);
    let mut errors = 0u64;
    let mut last = None;
    let shared: Option<Arc<str>> = senders.then(|| format!("load-{}", std::process::id()).into());
    if let Some(session_id) = &shared {
        match connect_sender(ctx, options, Some(session_id)).await {
            Ok(first) => ok.push(first),
            Err(e) => {
                errors += 1;
                last = Some(e.to_string());
            }
        }
    }
    let handles: Vec<_> = (ok.len() + errors as usize..n)
        .map(|_| {
            let ctx = ctx.clone();
            let shared = shared.clone();
            tokio::spawn(async move { connect_one(&ctx, options, shared.as_deref()).await })
        })
        .collect();
    for h in handles {
        match h.await {
            Ok(Ok(c)) => ok.push(c),
            Ok(Err(e)) => {
                errors += 1;
                last = Some(e.to_string());
            }
            Err(e) => {
                errors += 1;
                last = Some(e.to_string());
            }
        }
    }
    out.kv("clients", n as u64);
    out.kv("setup_s", (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    out.kv("setup_errors", errors);
    if let Some(e) = last {
        out.kv("setup_last_error", e);
    }
    ok
}
