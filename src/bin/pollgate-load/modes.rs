//! The load modes: closed loops (handshake, echo), deliveries to held polls (targeted,
//! broadcast) and memory (idle, churn).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::client::{Options, Session, SYSTEM};
use crate::http::{Conn, Res};
use crate::stats::{fds, merge, sample, summarize, Recorder};
use crate::{connect_many, connect_one, connect_sender, mb, spawn_sampler, Ctx, Report};

/// The load phases of a timed mode.
#[derive(Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

/// One operation of a closed-loop client.
#[derive(Clone, Copy)]
pub enum Op {
    Handshake { close: bool },
    Echo { payload: usize, options: Options, direct: bool },
}

/// N clients, each on one keep-alive connection, repeating `op` until the window ends.
pub async fn timed(ctx: &Arc<Ctx>, out: &mut Report, clients: usize, window: Window, op: Op) -> Res<()> {
    let mut clients_ready = Vec::with_capacity(clients);
    match op {
        Op::Handshake { .. } => {
            out.kv("clients", clients as u64);
            for _ in 0..clients {
                clients_ready.push((Conn::open(ctx.addr, ctx.timeout).await?, None));
            }
        }
        Op::Echo { options, direct, .. } => {
            out.kv("ack", options.ack);
            out.kv("seq", options.seq);
            out.kv("direct", direct);
            let sessions = connect_many(ctx, out, clients, options, true).await;
            clients_ready.extend(sessions.into_iter().map(|(conn, session)| (conn, Some(session))));
        }
    }
    if clients_ready.is_empty() {
        return Err("no client could connect".into());
    }
    let from = Instant::now() + window.warmup;
    let until = from + window.duration;
    let sampler = spawn_sampler(ctx.pids.clone(), from, until);
    let mut handles = Vec::with_capacity(clients_ready.len());
    for (i, (mut conn, mut session)) in clients_ready.into_iter().enumerate() {
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let mut rec = Recorder::new(from, until);
            let mut n: u64 = 0;
            while !rec.done() {
                n += 1;
                let t0 = Instant::now();
                let result = match op {
                    Op::Handshake { close } => handshake(&ctx, &mut conn, close).await,
                    Op::Echo { payload, direct, .. } => match session.as_mut() {
                        Some(s) if direct => echo_direct(&mut conn, s, i, n, payload).await,
                        Some(s) => echo(&ctx, &mut conn, s, i, n, payload).await,
                        None => Err("no session".into()),
                    },
                };
                match result {
                    Ok(()) => rec.record(t0, Instant::now()),
                    Err(e) => {
                        rec.error(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            rec
        }));
    }
    let mut recs = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(r) = h.await {
            recs.push(r);
        }
    }
    let (server, me) = sampler.await?;
    let s = merge(recs);
    let window_s = until.duration_since(from).as_secs_f64();
    out.kv("window_s", window_s);
    out.kv("ops_per_s", (s.count as f64 / window_s).round());
    out.latency("", &s);
    out.kv("errors", s.errors);
    if let Some(e) = &s.last_error {
        out.kv("last_error", e.clone());
    }
    out.cpu_per_op(&server, window_s, s.count as u64);
    out.processes(server, me);
    Ok(())
}

async fn handshake(ctx: &Ctx, conn: &mut Conn, close: bool) -> Res<()> {
    let session = Session::open(conn, &ctx.path, Options::default(), None).await?;
    if close {
        session.close(conn).await?;
    }
    Ok(())
}

/// One echo: a `send` to the client's own connector. Its body is the forwarded token
/// (pollgate answers the first packet for the requester in the body); the server's
/// response token is queued, and a long-poll brings it back.
async fn echo(ctx: &Ctx, conn: &mut Conn, session: &mut Session, i: usize, n: u64, payload: usize) -> Res<()> {
    let data = format!("c{i}s{n}{}", "x".repeat(payload.saturating_sub(12)));
    let token =
        format!(r#"{{"ns":"{SYSTEM}","type":"send","utid":{n},"targetId":"{}","data":"{data}"}}"#, session.source_id);
    let body = session.send(conn, token).await?;
    if !contains(&body, data.as_bytes()) {
        return Err(format!("echo: the send answered {}", String::from_utf8_lossy(&body)).into());
    }
    let want = format!(r#""utid":{n},"#);
    for _ in 0..64 {
        for packet in session.sync(conn, ctx.wait_ms).await? {
            if packet.contains(&want) && packet.contains(r#""reqType":"send""#) {
                return Ok(());
            }
        }
    }
    Err("echo: no response after 64 polls".into())
}

/// One echo answered in the send's own response: a system `echo` token, whose response
/// token carries the data back (one request).
async fn echo_direct(conn: &mut Conn, session: &mut Session, i: usize, n: u64, payload: usize) -> Res<()> {
    let data = format!("c{i}s{n}{}", "x".repeat(payload.saturating_sub(12)));
    let token = format!(r#"{{"ns":"{SYSTEM}","type":"echo","utid":{n},"data":"{data}"}}"#);
    let body = session.send(conn, token).await?;
    let want = format!(r#""utid":{n},"#);
    if !contains(&body, data.as_bytes()) || !contains(&body, want.as_bytes()) || !contains(&body, br#""code":0"#) {
        return Err(format!("echo: the send answered {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts a task per receiver that holds polls and reports every packet carrying
/// `"data":"{marker}K"` as (K, arrival time); `route` picks the channel from the packet.
fn spawn_receivers(
    ctx: &Arc<Ctx>,
    receivers: Vec<(Conn, Session)>,
    marker: &'static str,
    route: impl Fn(u64) -> usize + Clone + Send + 'static,
    channels: Vec<mpsc::UnboundedSender<(u64, Instant)>>,
) -> Arc<AtomicUsize> {
    let errors = Arc::new(AtomicUsize::new(0));
    let needle = format!(r#""data":"{marker}"#);
    for (mut conn, mut session) in receivers {
        let ctx = ctx.clone();
        let errors = errors.clone();
        let channels = channels.clone();
        let needle = needle.clone();
        let route = route.clone();
        tokio::spawn(async move {
            loop {
                match session.sync(&mut conn, ctx.wait_ms).await {
                    Ok(packets) => {
                        let now = Instant::now();
                        for packet in packets {
                            let Some(at) = packet.find(&needle) else { continue };
                            let digits = &packet[at + needle.len()..];
                            let end = digits.find('"').unwrap_or(digits.len());
                            if let Ok(k) = digits[..end].parse::<u64>() {
                                let _ = channels[route(k)].send((k, now));
                            }
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }
    errors
}

/// Senders each keep one packet in flight to one receiver's held poll.
pub async fn targeted(ctx: &Arc<Ctx>, out: &mut Report, clients: usize, senders: usize, window: Window) -> Res<()> {
    let receivers = connect_many(ctx, out, clients, Options::default(), false).await;
    if receivers.is_empty() {
        return Err("no receiver could connect".into());
    }
    let targets: Arc<Vec<String>> = Arc::new(receivers.iter().map(|(_, s)| s.source_id.clone()).collect());
    let senders = senders.max(1) as u64;
    let (channels, inboxes): (Vec<_>, Vec<_>) = (0..senders).map(|_| mpsc::unbounded_channel()).unzip();
    // Packet K belongs to sender K % senders.
    let receiver_errors = spawn_receivers(ctx, receivers, "t", move |k| (k % senders) as usize, channels);
    tokio::time::sleep(Duration::from_millis(500)).await; // let the receivers' polls land
    let from = Instant::now() + window.warmup;
    let until = from + window.duration;
    let sampler = spawn_sampler(ctx.pids.clone(), from, until);
    let mut handles = Vec::new();
    for (s, mut inbox) in (0..senders).zip(inboxes) {
        let ctx = ctx.clone();
        let targets = targets.clone();
        handles.push(tokio::spawn(async move {
            let mut rec = Recorder::new(from, until);
            let setup = connect_sender(&ctx, Options::default(), None).await;
            let Ok((mut conn, mut session)) = setup else {
                rec.error("sender could not connect");
                return rec;
            };
            let mut k = s;
            while !rec.done() {
                let target = &targets[(k as usize) % targets.len()];
                let token = format!(
                    r#"{{"ns":"{SYSTEM}","type":"send","targetId":"{target}","responseRequested":false,"data":"t{k}"}}"#
                );
                let t0 = Instant::now();
                if let Err(e) = session.send(&mut conn, token).await {
                    rec.error(e);
                    break;
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match tokio::time::timeout_at(deadline, inbox.recv()).await {
                        Ok(Some((got, at))) if got == k => {
                            rec.record(t0, at);
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            rec.error(format!("packet {k} not delivered within 10 s"));
                            return rec;
                        }
                    }
                }
                k += senders;
            }
            rec
        }));
    }
    let mut recs = Vec::new();
    for h in handles {
        recs.push(h.await?);
    }
    let (server, me) = sampler.await?;
    let s = merge(recs);
    let window_s = until.duration_since(from).as_secs_f64();
    out.kv("senders", senders);
    out.kv("window_s", window_s);
    out.kv("ops_per_s", (s.count as f64 / window_s).round());
    out.latency("", &s);
    out.kv("errors", s.errors);
    if let Some(e) = &s.last_error {
        out.kv("last_error", e.clone());
    }
    out.kv("receiver_errors", receiver_errors.load(Ordering::SeqCst) as u64);
    out.cpu_per_op(&server, window_s, s.count as u64);
    out.processes(server, me);
    Ok(())
}

/// One sender broadcasts round K and waits until every receiver has it before round K+1.
pub async fn broadcast(ctx: &Arc<Ctx>, out: &mut Report, clients: usize, rounds: usize, window: Window) -> Res<()> {
    let receivers = connect_many(ctx, out, clients, Options::default(), false).await;
    let count = receivers.len();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver_errors = spawn_receivers(ctx, receivers, "r", |_| 0, vec![tx]);
    // The sender is left out of its own broadcasts (senderIncluded defaults to false).
    let (mut conn, mut sender) = connect_sender(ctx, Options::default(), None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // let the receivers' polls land
    let from = Instant::now() + window.warmup;
    let until = from + window.duration;
    let sampler = spawn_sampler(ctx.pids.clone(), from, until);
    let mut deliveries: Vec<u32> = Vec::new();
    let mut fanout: Vec<u32> = Vec::new();
    let (mut done_rounds, mut incomplete, mut measured_deliveries) = (0u64, 0u64, 0u64);
    for k in 0..rounds as u64 {
        if Instant::now() >= until {
            break;
        }
        let t0 = Instant::now();
        let token = format!(r#"{{"ns":"{SYSTEM}","type":"broadcast","responseRequested":false,"data":"r{k}"}}"#);
        sender.send(&mut conn, token).await?;
        let (mut got, mut last) = (0usize, t0);
        let measured = t0 >= from;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < count {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((kk, at))) if kk == k => {
                    got += 1;
                    last = last.max(at);
                    if measured {
                        deliveries.push(at.duration_since(t0).as_micros() as u32);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if got < count {
            incomplete += 1;
            break;
        }
        done_rounds += 1;
        if measured {
            measured_deliveries += got as u64;
            fanout.push(last.duration_since(t0).as_micros() as u32);
        }
    }
    let measured_end = Instant::now().min(until);
    let (server, me) = if Instant::now() >= until {
        sampler.await?
    } else {
        sampler.abort();
        (None, None)
    };
    let window_s = measured_end.saturating_duration_since(from).as_secs_f64();
    out.kv("receivers", count as u64);
    out.kv("rounds_done", done_rounds);
    out.kv("rounds_incomplete", incomplete);
    out.kv("receiver_errors", receiver_errors.load(Ordering::SeqCst) as u64);
    let fan = summarize(fanout, 0, None);
    out.kv("window_s", (window_s * 1000.0).round() / 1000.0);
    if window_s > 0.0 {
        out.kv("rounds_per_s", (fan.count as f64 / window_s * 10.0).round() / 10.0);
        out.kv("deliveries_per_s", (measured_deliveries as f64 / window_s).round());
    }
    out.latency("fanout_", &fan);
    out.latency("delivery_", &summarize(deliveries, 0, None));
    out.cpu_per_op(&server, window_s, measured_deliveries);
    out.processes(server, me);
    Ok(())
}

/// N clients each hold a long-poll; the server's RSS growth divided by N, and its open
/// descriptors against its limit. With `fill`, N is every descriptor the server has left.
pub async fn idle(ctx: &Arc<Ctx>, out: &mut Report, clients: usize, settle: f64, hold: f64, fill: bool) -> Res<()> {
    let clients = if fill { descriptors_left(ctx.pid)? } else { clients };
    out.kv("clients", clients as u64);
    out.kv("fill", fill);
    let before = ctx.pid.and_then(|p| sample(Some(p)));
    let holding = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    for _ in 0..clients {
        let (ctx, holding, finished, errors) = (ctx.clone(), holding.clone(), finished.clone(), errors.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let setup = connect_one(&ctx, Options::default(), None).await;
            finished.fetch_add(1, Ordering::SeqCst);
            let Ok((mut conn, mut session)) = setup else {
                errors.fetch_add(1, Ordering::SeqCst);
                return;
            };
            holding.fetch_add(1, Ordering::SeqCst);
            loop {
                tokio::select! {
                    r = session.sync(&mut conn, ctx.wait_ms) => if r.is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                        holding.fetch_sub(1, Ordering::SeqCst);
                        return;
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    while finished.load(Ordering::SeqCst) < clients {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup = t0.elapsed().as_secs_f64();
    out.kv("setup_s", (setup * 1000.0).round() / 1000.0);
    out.kv("setup_clients_per_s", (clients as f64 / setup).round());
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let after = ctx.pid.and_then(|p| sample(Some(p)));
    let held_at_sample = holding.load(Ordering::SeqCst);
    let server_fds = ctx.pid.and_then(fds);
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let end = ctx.pid.and_then(|p| sample(Some(p)));
    out.kv("holding_at_sample", held_at_sample as u64);
    out.kv("holding_at_end", holding.load(Ordering::SeqCst) as u64);
    out.kv("errors", errors.load(Ordering::SeqCst) as u64);
    if let Some((open, limit)) = server_fds {
        out.kv("server_fds", open);
        out.kv("server_fd_limit", limit);
    }
    let _ = stop_tx.send(true);
    if let (Some(b), Some(a), Some(e)) = (before, after, end) {
        out.kv("server_rss_before_mb", mb(b.rss_kb));
        out.kv("server_rss_after_mb", mb(a.rss_kb));
        out.kv("server_rss_end_mb", mb(e.rss_kb));
        out.kv("server_hwm_mb", mb(e.hwm_kb));
        let delta = a.rss_kb.saturating_sub(b.rss_kb) as f64 * 1024.0;
        let per = if held_at_sample > 0 { delta / held_at_sample as f64 } else { 0.0 };
        out.kv("rss_bytes_per_idle_client", per.round());
    } else {
        out.kv("note", "no --pid given (or /proc unreadable): no RSS figures");
    }
    if let Some(m) = sample(None) {
        out.kv("loadgen_rss_mb", mb(m.rss_kb));
    }
    Ok(())
}

/// The descriptors the server `pid` has left under its limit, as far as this process's own
/// limit allows: each client takes one here too. The one this process holds while it reads
/// /proc is counted among its own.
fn descriptors_left(pid: Option<u32>) -> Res<usize> {
    let pid = pid.ok_or("idle --fill needs --pid")?;
    let (server_open, server_limit) = fds(pid).ok_or("cannot read the server's descriptors in /proc")?;
    let (own_open, own_limit) = fds(std::process::id()).ok_or("cannot read this process's descriptors in /proc")?;
    let server_room = server_limit.saturating_sub(server_open);
    let own_room = own_limit.saturating_sub(own_open);
    Ok(server_room.min(own_room) as usize)
}

/// `rounds` times: opens `clients` connections (open + first sync each), abandons them, and
/// waits for the reaper. The server's RSS must come back to where it started and no connector
/// may be left; later rounds show whether memory creeps up from burst to burst.
///
/// A burst of `warm_up` clients goes first, reaped like the others, and the start is
/// sampled after it: a fresh server's first open, reaper pass and sweep fault in pages of
/// program code once (~0.7 MB), which is not memory the churn left behind. The RSS before
/// it is reported too (`rss_cold_mb`).
#[allow(clippy::too_many_arguments)]
pub async fn churn(
    ctx: &Arc<Ctx>,
    out: &mut Report,
    clients: usize,
    rounds: usize,
    warm_up: usize,
    concurrency: usize,
    reap_wait: f64,
    settle: f64,
    account: (&str, &str),
) -> Res<()> {
    out.kv("clients", clients as u64);
    out.kv("rounds", rounds as u64);
    out.kv("warm_up", warm_up as u64);
    let mut counter = Counter::new(ctx, account).await?;
    let baseline = counter.others().await?;
    out.kv("connectors_before", baseline as u64);
    let cold = server_rss_mb(ctx);
    let mut burst = Burst { ctx, counter: &mut counter, baseline, concurrency, reap_wait, settle };
    let mut errors = 0;
    if warm_up > 0 {
        errors += burst.run(warm_up).await?.errors;
    }
    let start = server_rss_mb(ctx);
    let (mut peaks, mut ends, mut lefts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let b = burst.run(clients).await?;
        if round == 0 {
            out.kv("opens_per_s", (clients as f64 / b.open_s).round());
            out.kv("connectors_at_peak", b.at_peak as u64);
            out.kv("reaped_after_s", (b.reaped_after_s * 10.0).round() / 10.0);
        }
        errors += b.errors;
        peaks.push(b.peak_mb.unwrap_or(0.0));
        lefts.push(b.left as u64);
        ends.push(b.end_mb.unwrap_or(0.0));
    }
    out.kv("errors", errors as u64);
    out.kv("connectors_left", *lefts.last().unwrap_or(&0));
    out.kv("connectors_left_per_round", lefts);
    if let (Some(cold_mb), Some(start_mb)) = (cold, start) {
        let end_mb = *ends.last().unwrap_or(&0.0);
        out.kv("rss_cold_mb", cold_mb);
        out.kv("rss_start_mb", start_mb);
        out.kv("rss_peak_mb", peaks.iter().cloned().fold(0.0, f64::max));
        out.kv("rss_end_mb", end_mb);
        out.kv("rss_end_over_start", (end_mb / start_mb.max(0.1) * 1000.0).round() / 1000.0);
        out.kv("rss_end_over_cold", (end_mb / cold_mb.max(0.1) * 1000.0).round() / 1000.0);
        out.kv("rss_peak_mb_per_round", peaks);
        out.kv("rss_end_mb_per_round", ends);
    }
    Ok(())
}

/// One burst of [`churn`]: what it opens, and how to count what the reaper leaves.
struct Burst<'a> {
    ctx: &'a Arc<Ctx>,
    counter: &'a mut Counter,
    /// Connectors there before the first burst (the counter's own is not counted).
    baseline: usize,
    concurrency: usize,
    reap_wait: f64,
    settle: f64,
}

/// What one [`Burst`] saw; RSS figures are `None` without `--pid`.
struct BurstResult {
    errors: usize,
    open_s: f64,
    at_peak: usize,
    peak_mb: Option<f64>,
    reaped_after_s: f64,
    left: usize,
    end_mb: Option<f64>,
}

impl Burst<'_> {
    /// Opens and abandons `clients` connectors, waits for the reaper (counting every
    /// second), then lets the closed ones be swept before sampling the end.
    async fn run(&mut self, clients: usize) -> Res<BurstResult> {
        let t0 = Instant::now();
        let errors = open_and_abandon(self.ctx, clients, self.concurrency).await;
        let open_s = t0.elapsed().as_secs_f64();
        let peak_mb = server_rss_mb(self.ctx);
        let at_peak = self.count("at the peak", clients, t0).await?;
        let deadline = Instant::now() + Duration::from_secs_f64(self.reap_wait);
        let mut left = at_peak;
        while left > self.baseline && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            left = self.count("waiting for the reaper", clients, t0).await?;
        }
        let reaped_after_s = t0.elapsed().as_secs_f64() - open_s;
        let mut left = left.saturating_sub(self.baseline);
        // Closed connectors stay as tombstones for min(timeout, 5 min) until their sweep.
        // The counter keeps counting meanwhile, so that its own connection is not reaped.
        let settled = Instant::now() + Duration::from_secs_f64(self.settle);
        while Instant::now() < settled {
            tokio::time::sleep(Duration::from_secs(1).min(settled - Instant::now())).await;
            left = self.count("settling", clients, t0).await?.saturating_sub(self.baseline);
        }
        Ok(BurstResult { errors, open_s, at_peak, peak_mb, reaped_after_s, left, end_mb: server_rss_mb(self.ctx) })
    }

    /// The counter's count. A failure says when in which burst it came, and how long after
    /// the counter's last answered request: longer than the server's timeout means the
    /// counter itself was late (this process or the machine stalled); shorter, that its
    /// connector was closed while in use.
    async fn count(&mut self, phase: &str, clients: usize, t0: Instant) -> Res<usize> {
        let since = t0.elapsed().as_secs_f64();
        let gap = self.counter.last_answer.elapsed().as_secs_f64();
        self.counter.others().await.map_err(|e| {
            format!("counting, {phase}, {since:.1} s into a burst of {clients}, {gap:.1} s after the last answer: {e}")
                .into()
        })
    }
}

/// The server's RSS in MB, or `None` without `--pid`.
fn server_rss_mb(ctx: &Ctx) -> Option<f64> {
    ctx.pid.and_then(|p| sample(Some(p))).map(|s| mb(s.rss_kb))
}

/// Opens `clients` connections on `concurrency` keep-alive connections and never touches
/// them again (no close, no further sync); returns the number of failures.
async fn open_and_abandon(ctx: &Arc<Ctx>, clients: usize, concurrency: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (ctx, next, errors) = (ctx.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = Conn::open(ctx.addr, ctx.timeout).await else {
                    errors.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                while next.fetch_add(1, Ordering::SeqCst) < clients {
                    if Session::open(&mut conn, &ctx.path, Options::default(), None).await.is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        if w.await.is_err() {
            errors.fetch_add(1, Ordering::SeqCst);
        }
    }
    errors.load(Ordering::SeqCst)
}

/// A logged-in connection that counts the server's connectors with `getClients`. It logs in
/// once: a password hash per count would show up in the server's memory figures.
struct Counter {
    conn: Conn,
    session: Session,
    /// When the server last answered one of its requests.
    last_answer: Instant,
}

impl Counter {
    async fn new(ctx: &Ctx, (user, password): (&str, &str)) -> Res<Counter> {
        let mut conn = Conn::open(ctx.addr, ctx.timeout).await?;
        let mut session = Session::open(&mut conn, &ctx.path, Options::default(), None).await?;
        session.login(&mut conn, user, password).await?;
        Ok(Counter { conn, session, last_answer: Instant::now() })
    }

    /// Connectors besides this one.
    async fn others(&mut self) -> Res<usize> {
        let token = format!(r#"{{"ns":"{SYSTEM}","type":"getClients"}}"#);
        let body = self.session.send(&mut self.conn, token).await?;
        self.last_answer = Instant::now();
        let reply: serde_json::Value = serde_json::from_slice(&body)?;
        let clients = reply["clients"].as_array().ok_or_else(|| format!("getClients answered {reply}"))?;
        let me = format!("@{}", self.session.source_id);
        Ok(clients.iter().filter(|c| !c.as_str().unwrap_or("").ends_with(&me)).count())
    }
}
