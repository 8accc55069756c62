//! Latency samples, percentiles, and the server's CPU time and RSS read from `/proc` (the
//! same figures for every server: the peers' load tool in `benches/peers` builds this file in).

use std::time::Instant;

/// Per-task recorder: keeps latencies (µs) only for operations that started
/// after `from` and finished before `until` (the measurement window).
pub struct Recorder {
    pub from: Instant,
    pub until: Instant,
    pub lat_us: Vec<u32>,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Recorder {
    pub fn new(from: Instant, until: Instant) -> Self {
        Recorder { from, until, lat_us: Vec::with_capacity(1 << 14), errors: 0, last_error: None }
    }
    #[inline]
    pub fn record(&mut self, start: Instant, end: Instant) {
        if start >= self.from && end <= self.until {
            let us = end.duration_since(start).as_micros().min(u32::MAX as u128) as u32;
            self.lat_us.push(us);
        }
    }
    pub fn error(&mut self, e: impl ToString) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
    }
    pub fn done(&self) -> bool {
        Instant::now() >= self.until
    }
}

pub struct Summary {
    pub count: usize,
    pub errors: u64,
    pub last_error: Option<String>,
    pub mean_us: f64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

pub fn merge(recs: Vec<Recorder>) -> Summary {
    let mut all: Vec<u32> = Vec::with_capacity(recs.iter().map(|r| r.lat_us.len()).sum());
    let mut errors = 0;
    let mut last_error = None;
    for r in recs {
        all.extend_from_slice(&r.lat_us);
        errors += r.errors;
        if r.last_error.is_some() {
            last_error = r.last_error;
        }
    }
    summarize(all, errors, last_error)
}

pub fn summarize(mut all: Vec<u32>, errors: u64, last_error: Option<String>) -> Summary {
    all.sort_unstable();
    let n = all.len();
    let pct = |p: f64| -> u32 {
        if n == 0 {
            0
        } else {
            all[(((n as f64) * p) as usize).min(n - 1)]
        }
    };
    let mean = if n == 0 { 0.0 } else { all.iter().map(|&x| x as f64).sum::<f64>() / n as f64 };
    Summary {
        count: n,
        errors,
        last_error,
        mean_us: mean,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: all.last().copied().unwrap_or(0),
    }
}

/// CPU ticks (utime+stime) and RSS of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_ticks: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub at: Option<Instant>,
}

/// Clock ticks per second of `/proc/*/stat` times: Linux's USER_HZ, 100 on every
/// architecture this runs on (fixed by the kernel ABI, whatever the kernel's own HZ).
const CLK_TCK: f64 = 100.0;

pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let base = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // fields after the ")" of comm: state is field 3; utime=14, stime=15 (1-based)
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample { cpu_ticks: utime + stime, rss_kb: kb("VmRSS:"), hwm_kb: kb("VmHWM:"), at: Some(Instant::now()) })
}

/// A process's open file descriptors, from /proc.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// A process's open file descriptors and its limit on them (the soft `Max open files`), from
/// /proc: how close a server came to holding as many connections as it may.
pub fn fds(pid: u32) -> Option<(u64, u64)> {
    let open = open_fds(pid)?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    // "Max open files            20000                20000                files"
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let limit = line.split_whitespace().nth(3)?.parse().ok()?;
    Some((open, limit))
}

/// CPU use between two samples, in "cores" (1.0 = one core fully busy).
pub fn cpu_cores(a: &ProcSample, b: &ProcSample) -> f64 {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => return 0.0,
    };
    if secs <= 0.0 {
        return 0.0;
    }
    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / CLK_TCK / secs
}
