//! peer-load: the load tool of the benchmark's peers. It drives the socket.io and
//! socketioxide peers as an engine.io long-polling client, and the hyper floor with plain
//! GETs; pollgate itself is driven by its own tool, `pollgate-load`, whose modes and result
//! fields (`RESULT {json}`) this tool shares, so that `scripts/perf_report.py` reads both.
//!
//! Every run is bounded (warm-up + measured window, or a fixed hold), a watchdog ends the
//! process after `--max-runtime` in any case, and only loopback addresses are accepted.

mod eio;
mod http;
// The figures are computed by pollgate-load's own code, so that both tools' results mean
// the same and sit in one table. (Its descriptor counts are pollgate-load's alone.)
#[allow(dead_code)]
#[path = "../../../../../../src/bin/pollgate-load/stats.rs"]
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::sync::{mpsc, Semaphore};

use crate::eio::Session;
use crate::http::{Conn, Res};
use crate::stats::{cpu_cores, merge, sample, summarize, ProcSample, Recorder, Summary};

#[derive(Parser)]
#[command(about = "Bounded load tool for the benchmark's engine.io long-polling peers")]
struct Cli {
    /// The server (loopback only).
    #[arg(long, default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// The engine.io path.
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The server's pid: its CPU time and memory are read from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// A label copied into the result.
    #[arg(long, default_value = "")]
    label: String,
    /// Clients setting up (connect, handshake, socket.io connect) at the same time.
    #[arg(long, default_value_t = 128)]
    setup_concurrency: usize,
    /// Seconds a request other than a poll may take.
    #[arg(long, default_value_t = 10.0)]
    req_timeout: f64,
    /// Seconds after which the process ends whatever it is doing.
    #[arg(long, default_value_t = 90.0)]
    max_runtime: f64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// GETs in a loop on keep-alive connections (the hyper floor).
    Floor {
        #[arg(short = 'c', long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value = "/")]
        url: String,
    },
    /// Engine.io handshakes in a loop on keep-alive connections.
    Handshake {
        #[arg(short = 'c', long, default_value_t = 64)]
        clients: usize,
        /// Also connect to the socket.io namespace.
        #[arg(long)]
        sio_connect: bool,
        /// Close each session (engine.io close packet) after opening it.
        #[arg(long)]
        close: bool,
    },
    /// Connected clients in a closed loop: POST `42["echo",msg]`, poll until it comes back.
    Echo {
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: usize,
        /// The message's size in bytes (about).
        #[arg(long, default_value_t = 16)]
        payload: usize,
    },
    /// Connected clients each holding a poll; the server's memory per client (needs --pid).
    Idle {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// Seconds between the last client holding and the memory sample.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Seconds the clients go on holding after the sample.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
        /// Plain HTTP: one GET of this path per connection, then the connection idles.
        #[arg(long)]
        plain: Option<String>,
    },
    /// Receivers holding polls; one sender emits `broadcast` rounds, each once every
    /// receiver has the one before.
    Broadcast {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// At most this many rounds (the window ends the run as well).
        #[arg(long, default_value_t = 1_000_000)]
        rounds: usize,
    },
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Floor { .. } => "floor",
            Mode::Handshake { .. } => "handshake",
            Mode::Echo { .. } => "echo",
            Mode::Idle { .. } => "idle",
            Mode::Broadcast { .. } => "broadcast",
        }
    }
}

/// What every client task needs.
struct Ctx {
    addr: SocketAddr,
    path: String,
    pid: Option<u32>,
    timeout: Duration,
    /// Bounds the clients setting up at once, so that a thousand connects do not overrun
    /// the server's listen backlog.
    setup: Semaphore,
}

fn main() {
    let cli = Cli::parse();
    if !cli.addr.ip().is_loopback() {
        eprintln!("refusing {}: loopback addresses only", cli.addr);
        std::process::exit(2);
    }
    let limit = Duration::from_secs_f64(cli.max_runtime);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: --max-runtime reached");
        std::process::exit(3);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let code = runtime.block_on(run(cli));
    // Held polls are not waited for.
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let ctx = Arc::new(Ctx {
        addr: cli.addr,
        path: cli.path.clone(),
        pid: cli.pid,
        timeout: Duration::from_secs_f64(cli.req_timeout),
        setup: Semaphore::new(cli.setup_concurrency.max(1)),
    });
    let warmup = Duration::from_secs_f64(cli.warmup);
    let duration = Duration::from_secs_f64(cli.duration);
    let mut report = Report::new(&cli);
    let outcome = match cli.mode.clone() {
        Mode::Floor { clients, url } => timed(&ctx, &mut report, clients, warmup, duration, Op::Floor(url)).await,
        Mode::Handshake { clients, sio_connect, close } => {
            let op = Op::Handshake { connect: sio_connect, close };
            timed(&ctx, &mut report, clients, warmup, duration, op).await
        }
        Mode::Echo { clients, payload } => {
            timed(&ctx, &mut report, clients, warmup, duration, Op::Echo { payload }).await
        }
        Mode::Idle { clients, settle, hold, plain } => idle(&ctx, &mut report, clients, settle, hold, plain).await,
        Mode::Broadcast { clients, rounds } => broadcast(&ctx, &mut report, clients, rounds, warmup, duration).await,
    };
    if let Err(error) = outcome {
        report.kv("fatal", error.to_string());
        report.print();
        return 1;
    }
    report.print();
    0
}

// ---------------------------------------------------------------- the result line

/// The result's fields in order: printed as `key=value` words, then as `RESULT {json}`.
struct Report {
    fields: Vec<(String, serde_json::Value)>,
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

impl Report {
    fn new(cli: &Cli) -> Report {
        let mut report = Report { fields: Vec::new() };
        report.kv("label", cli.label.clone());
        report.kv("mode", cli.mode.name());
        report.kv("addr", cli.addr.to_string());
        report
    }

    fn kv(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.fields.push((key.to_string(), value.into()));
    }

    /// Latency figures in ms, with `prefix` before each name.
    fn latencies(&mut self, prefix: &str, s: &Summary) {
        let ms = |us: u32| round(us as f64 / 1000.0, 3);
        self.kv(&format!("{prefix}count"), s.count as u64);
        self.kv(&format!("{prefix}mean_ms"), round(s.mean_us / 1000.0, 3));
        self.kv(&format!("{prefix}p50_ms"), ms(s.p50_us));
        self.kv(&format!("{prefix}p90_ms"), ms(s.p90_us));
        self.kv(&format!("{prefix}p99_ms"), ms(s.p99_us));
        self.kv(&format!("{prefix}p999_ms"), ms(s.p999_us));
        self.kv(&format!("{prefix}max_ms"), ms(s.max_us));
    }

    /// The server's and this tool's CPU over the window, and the server's memory at its end.
    fn processes(&mut self, server: Option<(ProcSample, ProcSample)>, me: Option<(ProcSample, ProcSample)>) {
        if let Some((a, b)) = server {
            self.kv("server_cpu_cores", round(cpu_cores(&a, &b), 2));
            self.kv("server_rss_mb", round(b.rss_kb as f64 / 1024.0, 1));
            self.kv("server_hwm_mb", round(b.hwm_kb as f64 / 1024.0, 1));
        }
        if let Some((a, b)) = me {
            self.kv("loadgen_cpu_cores", round(cpu_cores(&a, &b), 2));
        }
    }

    fn print(&self) {
        let words: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        println!("{}", words.join(" "));
        let object: serde_json::Map<String, serde_json::Value> = self.fields.iter().cloned().collect();
        println!("RESULT {}", serde_json::Value::Object(object));
    }
}

type Samples = (Option<(ProcSample, ProcSample)>, Option<(ProcSample, ProcSample)>);

/// Samples the server and this process at `from` and at `until`.
fn sample_window(pid: Option<u32>, from: Instant, until: Instant) -> tokio::task::JoinHandle<Samples> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let (server0, me0) = (pid.and_then(|p| sample(Some(p))), sample(None));
        tokio::time::sleep_until(until.into()).await;
        let (server1, me1) = (pid.and_then(|p| sample(Some(p))), sample(None));
        (server0.zip(server1), me0.zip(me1))
    })
}

// ---------------------------------------------------------------- set-up

/// A connection and, with `connect`, a session connected to the namespace `/` on it.
async fn client(ctx: &Ctx, connect: bool) -> Res<(Conn, Option<Session>)> {
    let _turn = ctx.setup.acquire().await?;
    let mut conn = Conn::open(ctx.addr, ctx.timeout).await?;
    let session = if connect { Some(Session::open(&mut conn, &ctx.path, true).await?) } else { None };
    Ok((conn, session))
}

/// `n` clients set up concurrently: those that made it, the failures, the last error and
/// the time it took.
async fn clients(
    ctx: &Arc<Ctx>,
    n: usize,
    connect: bool,
) -> (Vec<(Conn, Option<Session>)>, u64, Option<String>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { client(&ctx, connect).await })
        })
        .collect();
    let (mut ready, mut failures, mut last) = (Vec::with_capacity(n), 0, None);
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => ready.push(c),
            Ok(Err(e)) => (failures, last) = (failures + 1, Some(e.to_string())),
            Err(e) => (failures, last) = (failures + 1, Some(e.to_string())),
        }
    }
    (ready, failures, last, start.elapsed())
}

// ---------------------------------------------------------------- closed-loop modes

#[derive(Clone)]
enum Op {
    Floor(String),
    Handshake { connect: bool, close: bool },
    Echo { payload: usize },
}

/// Each client repeats `op` until the window ends; the latencies of those inside it count.
async fn timed(ctx: &Arc<Ctx>, report: &mut Report, n: usize, warmup: Duration, duration: Duration, op: Op) -> Res<()> {
    report.kv("clients", n as u64);
    let connect = matches!(op, Op::Echo { .. });
    let (ready, failures, last, setup) = clients(ctx, n, connect).await;
    report.kv("setup_s", round(setup.as_secs_f64(), 3));
    report.kv("setup_errors", failures);
    if let Some(e) = last {
        report.kv("setup_last_error", e);
    }
    if ready.is_empty() {
        return Err("no client could set up".into());
    }
    let from = Instant::now() + warmup;
    let until = from + duration;
    let sampler = sample_window(ctx.pid, from, until);
    let tasks: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(i, (mut conn, session))| {
            let (ctx, op) = (ctx.clone(), op.clone());
            tokio::spawn(async move {
                let mut record = Recorder::new(from, until);
                let mut round_trip = 0u64;
                // The message: the client's number and round, padded to the payload size.
                let pad = match op {
                    Op::Echo { payload } => "x".repeat(payload.saturating_sub(12)),
                    _ => String::new(),
                };
                while !record.done() {
                    let start = Instant::now();
                    round_trip += 1;
                    let outcome: Res<()> = async {
                        match &op {
                            Op::Floor(url) => match conn.get(url).await? {
                                (200, _) => Ok(()),
                                (status, _) => Err(format!("status {status}").into()),
                            },
                            Op::Handshake { connect, close } => {
                                let session = Session::open(&mut conn, &ctx.path, *connect).await?;
                                if *close {
                                    session.close(&mut conn).await?;
                                }
                                Ok(())
                            }
                            Op::Echo { .. } => {
                                let session = session.as_ref().ok_or("no session")?;
                                let message = format!("c{i}s{round_trip}{pad}");
                                session.post(&mut conn, format!("42[\"echo\",\"{message}\"]").as_bytes()).await?;
                                let quoted = format!("\"{message}\"");
                                for _ in 0..64 {
                                    for packet in session.poll(&mut conn).await? {
                                        if packet.starts_with("42[\"echo\"") && packet.contains(&quoted) {
                                            return Ok(());
                                        }
                                    }
                                }
                                Err("no echo after 64 polls".into())
                            }
                        }
                    }
                    .await;
                    match outcome {
                        Ok(()) => record.record(start, Instant::now()),
                        Err(e) => {
                            record.error(e);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                record
            })
        })
        .collect();
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(record) = task.await {
            records.push(record);
        }
    }
    let (server, me) = sampler.await?;
    let summary = merge(records);
    let window = duration.as_secs_f64();
    report.kv("window_s", window);
    report.kv("ops_per_s", (summary.count as f64 / window).round());
    report.latencies("", &summary);
    report.kv("errors", summary.errors);
    if let Some(e) = &summary.last_error {
        report.kv("last_error", e.clone());
    }
    if let (Some((a, b)), true) = (&server, summary.count > 0) {
        // The server's CPU per operation holds even when this tool is the bottleneck.
        report.kv("server_cpu_us_per_op", round(cpu_cores(a, b) * window * 1e6 / summary.count as f64, 1));
    }
    report.processes(server, me);
    Ok(())
}

// ---------------------------------------------------------------- idle memory

/// `n` clients hold a poll (or, with `plain`, an idle keep-alive connection); the server's
/// memory growth per holding client is the figure.
async fn idle(ctx: &Arc<Ctx>, report: &mut Report, n: usize, settle: f64, hold: f64, plain: Option<String>) -> Res<()> {
    report.kv("clients", n as u64);
    if let Some(path) = &plain {
        report.kv("plain_path", path.clone());
    }
    let before = ctx.pid.and_then(|p| sample(Some(p)));
    let holding = Arc::new(AtomicUsize::new(0));
    let set_up = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    for _ in 0..n {
        let (ctx, holding, set_up, failures) = (ctx.clone(), holding.clone(), set_up.clone(), failures.clone());
        let (mut stopped, plain) = (stopped.clone(), plain.clone());
        tokio::spawn(async move {
            if let Some(path) = plain {
                let outcome: Res<Conn> = async {
                    let _turn = ctx.setup.acquire().await?;
                    let mut conn = Conn::open(ctx.addr, ctx.timeout).await?;
                    match conn.get(&path).await? {
                        (200, _) => Ok(conn),
                        (status, _) => Err(format!("status {status}").into()),
                    }
                }
                .await;
                set_up.fetch_add(1, Ordering::SeqCst);
                match outcome {
                    Ok(_conn) => {
                        holding.fetch_add(1, Ordering::SeqCst);
                        let _ = stopped.changed().await;
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                return;
            }
            let outcome = client(&ctx, true).await;
            set_up.fetch_add(1, Ordering::SeqCst);
            let Ok((mut conn, Some(session))) = outcome else {
                failures.fetch_add(1, Ordering::SeqCst);
                return;
            };
            holding.fetch_add(1, Ordering::SeqCst);
            loop {
                tokio::select! {
                    outcome = session.poll(&mut conn) => if outcome.is_err() {
                        failures.fetch_add(1, Ordering::SeqCst);
                        holding.fetch_sub(1, Ordering::SeqCst);
                        return;
                    },
                    _ = stopped.changed() => return,
                }
            }
        });
    }
    while set_up.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup = start.elapsed().as_secs_f64();
    report.kv("setup_s", round(setup, 3));
    report.kv("setup_clients_per_s", (n as f64 / setup).round());
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let after = ctx.pid.and_then(|p| sample(Some(p)));
    let holding_at_sample = holding.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let end = ctx.pid.and_then(|p| sample(Some(p)));
    report.kv("holding_at_sample", holding_at_sample as u64);
    report.kv("holding_at_end", holding.load(Ordering::SeqCst) as u64);
    report.kv("errors", failures.load(Ordering::SeqCst) as u64);
    let _ = stop.send(true);
    if let (Some(before), Some(after)) = (before, after) {
        let mb = |kb: u64| round(kb as f64 / 1024.0, 1);
        report.kv("server_rss_before_mb", mb(before.rss_kb));
        report.kv("server_rss_after_mb", mb(after.rss_kb));
        if let Some(end) = end {
            report.kv("server_rss_end_mb", mb(end.rss_kb));
            report.kv("server_hwm_mb", mb(end.hwm_kb));
        }
        let grown = after.rss_kb.saturating_sub(before.rss_kb) as f64 * 1024.0;
        let per_client = if holding_at_sample > 0 { grown / holding_at_sample as f64 } else { 0.0 };
        report.kv("rss_bytes_per_idle_client", per_client.round());
    } else {
        report.kv("note", "no --pid (or /proc unreadable): no memory figures");
    }
    if let Some(me) = sample(None) {
        report.kv("loadgen_rss_mb", round(me.rss_kb as f64 / 1024.0, 1));
    }
    Ok(())
}

// ---------------------------------------------------------------- broadcast

/// Receivers hold polls; the sender emits round k and waits until every receiver has it
/// before it emits round k + 1. Figures: deliveries per second, the time until the last
/// receiver has a round (fan-out) and until each has it (delivery).
async fn broadcast(
    ctx: &Arc<Ctx>,
    report: &mut Report,
    n: usize,
    rounds: usize,
    warmup: Duration,
    duration: Duration,
) -> Res<()> {
    const PREFIX: &str = "42[\"broadcast\",\"r";
    report.kv("clients", n as u64);
    let (ready, failures, _, setup) = clients(ctx, n, true).await;
    report.kv("setup_s", round(setup.as_secs_f64(), 3));
    report.kv("setup_errors", failures);
    let receivers = ready.len();
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
    let receiver_errors = Arc::new(AtomicUsize::new(0));
    for (mut conn, session) in ready {
        let (arrived, errors) = (arrived.clone(), receiver_errors.clone());
        let session = session.expect("a connected client has a session");
        tokio::spawn(async move {
            loop {
                let Ok(packets) = session.poll(&mut conn).await else {
                    errors.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let now = Instant::now();
                for packet in packets {
                    let round = packet.strip_prefix(PREFIX).and_then(|rest| rest.split('"').next());
                    if let Some(k) = round.and_then(|k| k.parse().ok()) {
                        let _ = arrived.send((k, now));
                    }
                }
            }
        });
    }
    // The sender: one connection to post, another to drain its own copies (a broadcast
    // reaches the sender too).
    let mut post = Conn::open(ctx.addr, ctx.timeout).await?;
    let sender = Session::open(&mut post, &ctx.path, true).await?;
    let mut drain_conn = Conn::open(ctx.addr, ctx.timeout).await?;
    let drain = Session::join(&ctx.path, sender.sid.clone());
    tokio::spawn(async move { while drain.poll(&mut drain_conn).await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(500)).await; // the receivers' polls arrive

    let from = Instant::now() + warmup;
    let until = from + duration;
    let sampler = sample_window(ctx.pid, from, until);
    let (mut deliveries, mut fanouts) = (Vec::new(), Vec::new());
    let (mut done, mut incomplete, mut measured_deliveries) = (0u64, 0u64, 0u64);
    for k in 0..rounds as u64 {
        if Instant::now() >= until {
            break;
        }
        let start = Instant::now();
        sender.post(&mut post, format!("42[\"broadcast\",\"r{k}\"]").as_bytes()).await?;
        let measured = start >= from;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (mut got, mut last) = (0, start);
        while got < receivers {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((round, at))) if round == k => {
                    got += 1;
                    last = last.max(at);
                    if measured {
                        deliveries.push(at.duration_since(start).as_micros() as u32);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if got < receivers {
            incomplete += 1;
            break;
        }
        done += 1;
        if measured {
            measured_deliveries += got as u64;
            fanouts.push(last.duration_since(start).as_micros() as u32);
        }
    }
    let end = Instant::now().min(until);
    let (server, me) = if Instant::now() >= until {
        sampler.await?
    } else {
        sampler.abort();
        (None, None)
    };
    let window = end.saturating_duration_since(from).as_secs_f64();
    report.kv("receivers", receivers as u64);
    report.kv("rounds_done", done);
    report.kv("rounds_incomplete", incomplete);
    report.kv("receiver_errors", receiver_errors.load(Ordering::SeqCst) as u64);
    report.kv("window_s", round(window, 3));
    let fanout = summarize(fanouts, 0, None);
    if window > 0.0 {
        report.kv("rounds_per_s", round(fanout.count as f64 / window, 1));
        report.kv("deliveries_per_s", (measured_deliveries as f64 / window).round());
    }
    report.latencies("fanout_", &fanout);
    report.latencies("delivery_", &summarize(deliveries, 0, None));
    report.processes(server, me);
    Ok(())
}
