//! The soak mode: a bounded mix of connection churn (connections closed normally, abandoned,
//! and abandoned in the middle of a long-poll), held long-polls and broadcasts, with a row of
//! the server's RSS, live connectors and open descriptors every interval. At the end it waits
//! for the server's reaper and checks that connectors and descriptors are back at their start.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Options, Session, SYSTEM};
use crate::http::{Conn, Res};
use crate::stats::{open_fds, sample};
use crate::{connect_one, connect_sender, mb, Ctx, Report};

/// The shape of a soak run.
pub struct SoakOptions {
    /// Load phase.
    pub duration: Duration,
    /// Clients that hold long-polls; each closes and reopens its connection now and then.
    pub pollers: usize,
    /// Tasks that open a connection on a fresh TCP connection in a loop and end it one of
    /// three ways in turn: `action=close`, abandoned, abandoned while its poll is held.
    pub churners: usize,
    /// Pause of a churner between two connections.
    pub churn_pause: Duration,
    /// Time between two broadcasts (to every connector, abandoned ones included).
    pub broadcast_every: Duration,
    /// Time between two rows of the table.
    pub interval: Duration,
    /// Longest wait for the reaper after the load.
    pub reap_wait: Duration,
    /// Descriptors above the start still counted as "back at the start".
    pub fd_slack: u64,
}

/// What the load did, counted by every task.
#[derive(Default)]
struct Tally {
    closed: AtomicU64,
    abandoned: AtomicU64,
    abandoned_polling: AtomicU64,
    recycled: AtomicU64,
    polls: AtomicU64,
    packets: AtomicU64,
    broadcasts: AtomicU64,
    errors: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: impl ToString) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(e.to_string());
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One row of the table.
struct Row {
    t_s: f64,
    phase: &'static str,
    rss_kb: u64,
    connectors: u64,
    held_polls: u64,
    fds: u64,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "t_s": self.t_s, "phase": self.phase, "rss_mb": mb(self.rss_kb),
            "connectors": self.connectors, "held_polls": self.held_polls, "fds": self.fds,
        })
    }
}

/// Reads the server's figures: RSS and descriptors from /proc, connectors and held polls
/// from its metrics endpoint, on one keep-alive connection (open for the whole run, so its
/// descriptor is in every row, the first included).
struct Probe {
    conn: Conn,
    metrics_path: String,
    pid: u32,
    t0: Instant,
}

impl Probe {
    async fn row(&mut self, phase: &'static str) -> Res<Row> {
        // The server closes a connection idle for `header_read_timeout` (10 s by default),
        // maybe just as a request goes out on it: then once more on a new connection.
        let reply = match self.conn.request(&self.metrics_path, None, Duration::ZERO).await {
            Ok(reply) => reply,
            Err(_) => {
                self.conn = Conn::open(self.conn.addr, self.conn.timeout).await?;
                self.conn.request(&self.metrics_path, None, Duration::ZERO).await?
            }
        };
        if !reply.status.is_success() {
            return Err(format!("metrics: status {}", reply.status).into());
        }
        let text = String::from_utf8_lossy(&reply.body);
        let gauge = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        let rss_kb = sample(Some(self.pid)).ok_or("the server's /proc entry is gone")?.rss_kb;
        let fds = open_fds(self.pid).ok_or("the server's /proc entry is gone")?;
        Ok(Row {
            t_s: (self.t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            phase,
            rss_kb,
            connectors: gauge("pollgate_connectors"),
            held_polls: gauge("pollgate_held_polls"),
            fds,
        })
    }
}

/// Writes a line of the table at once (a closed pipe is not worth a panic).
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn print_row(row: &Row) {
    print_line(&format!(
        "{:>8.1} {:<6} {:>9.1} {:>10} {:>10} {:>6}",
        row.t_s,
        row.phase,
        mb(row.rss_kb),
        row.connectors,
        row.held_polls,
        row.fds
    ));
}

/// Runs the soak; fails if connectors or descriptors are not back at their start after the
/// reaper (the figures are in `out` either way).
pub async fn soak(ctx: &Arc<Ctx>, out: &mut Report, o: SoakOptions) -> Res<()> {
    let pid = ctx.pid.ok_or("soak needs --pid: RSS and descriptors are read from /proc")?;
    let metrics_path = match ctx.path.strip_suffix("/http") {
        Some(context) => format!("{context}/metrics"),
        None => return Err(format!("--path {} does not end in /http", ctx.path).into()),
    };
    let conn = Conn::open(ctx.addr, ctx.timeout).await?;
    let mut probe = Probe { conn, metrics_path, pid, t0: Instant::now() };
    print_line(&format!(
        "{:>8} {:<6} {:>9} {:>10} {:>10} {:>6}",
        "t_s", "phase", "rss_mb", "connectors", "held_polls", "fds"
    ));
    let start = probe.row("start").await?;
    print_row(&start);
    let (mut rows, mut peak_kb) = (vec![start.json()], start.rss_kb);

    let until = Instant::now() + o.duration;
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..o.pollers {
        tasks.push(tokio::spawn(poller(ctx.clone(), tally.clone(), until, i)));
    }
    for _ in 0..o.churners {
        tasks.push(tokio::spawn(churner(ctx.clone(), tally.clone(), until, o.churn_pause)));
    }
    tasks.push(tokio::spawn(broadcaster(ctx.clone(), tally.clone(), until, o.broadcast_every)));

    let mut next = Instant::now() + o.interval;
    while next <= until {
        tokio::time::sleep_until(next.into()).await;
        let row = probe.row("load").await?;
        print_row(&row);
        peak_kb = peak_kb.max(row.rss_kb);
        rows.push(row.json());
        next += o.interval;
    }
    // Every task ends by itself once `until` passed: at the latest when its held poll does.
    for task in tasks {
        if task.await.is_err() {
            tally.error("a load task panicked");
        }
    }

    // The reaper's turn: abandoned connectors close after the session timeout.
    let load_end = Instant::now();
    let reap_deadline = load_end + o.reap_wait;
    let mut next_row = load_end;
    let end = loop {
        let row = probe.row("reap").await?;
        peak_kb = peak_kb.max(row.rss_kb);
        let back = row.connectors <= start.connectors && row.fds <= start.fds + o.fd_slack;
        if back || Instant::now() >= reap_deadline {
            break Row { phase: "end", ..row };
        }
        if Instant::now() >= next_row {
            print_row(&row);
            rows.push(row.json());
            next_row += o.interval;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    print_row(&end);
    rows.push(end.json());
    let returned = end.connectors <= start.connectors && end.fds <= start.fds + o.fd_slack;

    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    out.kv("pollers", o.pollers as u64);
    out.kv("churners", o.churners as u64);
    out.kv("closed", count(&tally.closed));
    out.kv("abandoned", count(&tally.abandoned));
    out.kv("abandoned_polling", count(&tally.abandoned_polling));
    out.kv("recycled", count(&tally.recycled));
    out.kv("polls", count(&tally.polls));
    out.kv("packets", count(&tally.packets));
    out.kv("broadcasts", count(&tally.broadcasts));
    out.kv("errors", count(&tally.errors));
    if let Some(e) = tally.last_error.lock().clone() {
        out.kv("last_error", e);
    }
    out.kv("connectors_start", start.connectors);
    out.kv("connectors_end", end.connectors);
    out.kv("fds_start", start.fds);
    out.kv("fds_end", end.fds);
    out.kv("fd_slack", o.fd_slack);
    out.kv("rss_start_mb", mb(start.rss_kb));
    out.kv("rss_peak_mb", mb(peak_kb));
    out.kv("rss_end_mb", mb(end.rss_kb));
    out.kv("reaped_after_s", (load_end.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    out.kv("returned", returned);
    out.kv("samples", rows);
    if !returned {
        return Err("connectors or descriptors did not return to their start after the reaper".into());
    }
    Ok(())
}

/// Holds long-polls until `until`; every 16th poll (staggered) it closes its connection and
/// opens a new one. Ends with a close.
async fn poller(ctx: Arc<Ctx>, tally: Arc<Tally>, until: Instant, i: usize) {
    let mut current: Option<(Conn, Session)> = None;
    let mut n = i;
    while Instant::now() < until {
        let (conn, session) = match current.as_mut() {
            Some(c) => c,
            None => match connect_one(&ctx, Options::default(), None).await {
                Ok(c) => current.insert(c),
                Err(e) => {
                    tally.error(format!("poller open: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        match session.sync(conn, ctx.wait_ms).await {
            Ok(packets) => {
                Tally::add(&tally.polls);
                tally.packets.fetch_add(packets.len() as u64, Ordering::Relaxed);
            }
            // Closed by the server (a full queue, say) or cut: open again.
            Err(e) => {
                tally.error(format!("poller sync: {e}"));
                current = None;
                continue;
            }
        }
        n += 1;
        if n.is_multiple_of(16) {
            if let Some((mut conn, session)) = current.take() {
                match session.close(&mut conn).await {
                    Ok(()) => Tally::add(&tally.recycled),
                    Err(e) => tally.error(format!("poller close: {e}")),
                }
            }
        }
    }
    if let Some((mut conn, session)) = current {
        if let Err(e) = session.close(&mut conn).await {
            tally.error(format!("poller close: {e}"));
        }
    }
}

/// Opens connections on fresh TCP connections until `until`, ending them in turn with a
/// close, by abandoning them, and by abandoning them while a long-poll is held.
async fn churner(ctx: Arc<Ctx>, tally: Arc<Tally>, until: Instant, pause: Duration) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        match connect_one(&ctx, Options::default(), None).await {
            Ok((mut conn, mut session)) => match n % 3 {
                0 => match session.close(&mut conn).await {
                    Ok(()) => Tally::add(&tally.closed),
                    Err(e) => tally.error(format!("churn close: {e}")),
                },
                1 => Tally::add(&tally.abandoned),
                _ => {
                    // The poll is held (nothing is queued for a fresh connector but the
                    // broadcasts): give up on it and drop the TCP connection under it.
                    let held = tokio::time::timeout(Duration::from_millis(200), session.sync(&mut conn, ctx.wait_ms));
                    let _ = held.await;
                    Tally::add(&tally.abandoned_polling);
                }
            },
            Err(e) => tally.error(format!("churn open: {e}")),
        }
        tokio::time::sleep(pause).await;
    }
}

/// One logged-in connection broadcasting to every connector until `until`, then closing.
async fn broadcaster(ctx: Arc<Ctx>, tally: Arc<Tally>, until: Instant, every: Duration) {
    let (mut conn, mut session) = match connect_sender(&ctx, Options::default(), None).await {
        Ok(c) => c,
        Err(e) => return tally.error(format!("broadcaster: {e}")),
    };
    let mut k = 0u64;
    while Instant::now() < until {
        k += 1;
        let token = format!(r#"{{"ns":"{SYSTEM}","type":"broadcast","responseRequested":false,"data":"soak{k}"}}"#);
        match session.send(&mut conn, token).await {
            Ok(_) => Tally::add(&tally.broadcasts),
            Err(e) => tally.error(format!("broadcast: {e}")),
        }
        // Drain its own queue (events, if the server sends them), or it would overflow and
        // the server would close this connection.
        if let Err(e) = session.sync(&mut conn, 0).await {
            tally.error(format!("broadcaster sync: {e}"));
        }
        tokio::time::sleep(every).await;
    }
    if let Err(e) = session.close(&mut conn).await {
        tally.error(format!("broadcaster close: {e}"));
    }
}
