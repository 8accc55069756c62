//! Metrics in Prometheus' text format at `{context}/metrics` (the OpenMetrics exposition of
//! the `prometheus-client` crate).
//!
//! Counters and histograms count what this node did. The connector and session gauges are
//! read from the store at each scrape, so on a cluster every node reports the whole
//! cluster's; sum the counters, not those gauges.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of the protocol's actions, `other`, or `` for a request outside the endpoint.
    pub action: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// What a shared store counts: its round trips (a pipeline or a script is one), the ones
/// that failed, and (Redis Cluster) the times its link was replaced after a probe timed out.
/// The memory store makes none.
#[derive(Clone, Default)]
pub struct StoreMeter {
    pub round_trips: Counter,
    pub errors: Counter,
    pub link_renewals: Counter,
}

type LatencyFamily = Family<ActionLabel, Histogram, fn() -> Histogram>;

/// The protocol's actions, as the `action` label names them. Any other word is `other`, and
/// `` is a request to the endpoint whose action is not known yet.
pub const ACTIONS: [&str; 9] = ["open", "login", "send", "sync", "logout", "close", "download", "whoami", "active"];

/// The slot of an `action` label in [`Metrics::answered_ok`].
fn action_slot(action: &str) -> Option<usize> {
    match action {
        "other" => Some(ACTIONS.len()),
        "" => Some(ACTIONS.len() + 1),
        _ => ACTIONS.iter().position(|a| *a == action),
    }
}

/// Every metric of a node. Cheap to update: atomics, and a read lock for labelled ones.
pub struct Metrics {
    registry: Registry,
    connectors: Gauge,
    sessions: Gauge,
    pub held_polls: Gauge,
    /// Packets waiting in a queue when a sync takes them.
    pub queue_depth: Histogram,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub packets_queued: Counter,
    pub packets_delivered: Counter,
    pub closes: Family<ReasonLabel, Counter>,
    pub logins: Family<OutcomeLabel, Counter>,
    pub evictions: Counter,
    pub admissions_rejected: Counter,
    /// Panics caught in a request or a reaper pass ([`crate::panics`]); the server went on.
    pub panics: Counter,
    pub store: StoreMeter,
    /// Per `action` label ([`action_slot`]): its count of 200 answers and its latency, made
    /// on first use. Most requests land here; the two labelled lookups it saves cost a read
    /// lock and a SipHash of the labels each.
    answered_ok: [OnceLock<(Counter, Histogram)>; ACTIONS.len() + 2],
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~30 s: a request, or a held poll.
    Histogram::new(exponential_buckets(0.000_05, 2.5, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pollgate");
        let metrics = Metrics {
            connectors: Gauge::default(),
            sessions: Gauge::default(),
            held_polls: Gauge::default(),
            queue_depth: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
            packets_queued: Counter::default(),
            packets_delivered: Counter::default(),
            closes: Family::default(),
            logins: Family::default(),
            evictions: Counter::default(),
            admissions_rejected: Counter::default(),
            panics: Counter::default(),
            store: StoreMeter::default(),
            answered_ok: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connectors",
            "Live connectors (of the whole cluster on a shared store)",
            metrics.connectors.clone(),
        );
        r.register("sessions", "Sessions with a live connector (of the whole cluster)", metrics.sessions.clone());
        r.register("held_polls", "Syncs waiting for a packet on this node", metrics.held_polls.clone());
        r.register("queue_depth", "Packets in a queue when a sync takes them", metrics.queue_depth.clone());
        r.register("requests", "Requests by action and status", metrics.requests.clone());
        r.register("request_duration_seconds", "Request latency by action", metrics.latency.clone());
        r.register("packets_queued", "Packets queued for connectors", metrics.packets_queued.clone());
        r.register("packets_delivered", "Packets handed to clients by syncs", metrics.packets_delivered.clone());
        r.register("closes", "Connectors closed, by reason", metrics.closes.clone());
        r.register("logins", "Logins by outcome", metrics.logins.clone());
        r.register("evictions", "Connectors closed to admit a new one", metrics.evictions.clone());
        r.register("admissions_rejected", "Opens refused: too many connections", metrics.admissions_rejected.clone());
        r.register("panics", "Panics caught in a request or a reaper pass", metrics.panics.clone());
        r.register("store_round_trips", "Round trips to a shared store", metrics.store.round_trips.clone());
        r.register("store_errors", "Failed round trips to a shared store", metrics.store.errors.clone());
        r.register(
            "store_link_renewals",
            "Redis Cluster links replaced after a probe timed out",
            metrics.store.link_renewals.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// One request of `action` answered with `status` after `seconds`.
    pub fn request(&self, action: &'static str, status: u16, seconds: f64) {
        let kept = action_slot(action).filter(|_| status == 200);
        if let Some(i) = kept {
            // Clones of a family's series share its value.
            let (count, latency) = self.answered_ok[i].get_or_init(|| {
                let count = self.requests.get_or_create(&RequestLabels { action, status }).clone();
                (count, self.latency.get_or_create(&ActionLabel { action }).clone())
            });
            count.inc();
            latency.observe(seconds);
            return;
        }
        self.requests.get_or_create(&RequestLabels { action, status }).inc();
        self.latency.get_or_create(&ActionLabel { action }).observe(seconds);
    }

    pub fn closed(&self, reason: &'static str) {
        self.closes.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn login(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The text of a scrape, with the store's counts of connectors and sessions as read for
    /// it; a count the store could not give (`None`) keeps its gauge's last value.
    pub fn render(&self, connectors: Option<usize>, sessions: Option<usize>) -> String {
        if let Some(n) = connectors {
            self.connectors.set(n as i64);
        }
        if let Some(n) = sessions {
            self.sessions.set(n as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    #[test]
    fn kept_series_and_looked_up_ones_count_together() {
        let metrics = Metrics::default();
        for _ in 0..3 {
            metrics.request("send", 200, 0.001);
        }
        metrics.request("send", 409, 0.001);
        metrics.request("send", 200, 0.001);
        metrics.request("sync", 503, 0.001);
        metrics.request("other", 200, 0.001);
        metrics.request("", 200, 0.001);
        let text = text(&metrics);
        assert!(text.contains(r#"pollgate_requests_total{action="other",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"pollgate_requests_total{action="",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"pollgate_requests_total{action="send",status="200"} 4"#), "{text}");
        assert!(text.contains(r#"pollgate_requests_total{action="send",status="409"} 1"#), "{text}");
        assert!(text.contains(r#"pollgate_requests_total{action="sync",status="503"} 1"#), "{text}");
        assert!(text.contains(r#"pollgate_request_duration_seconds_count{action="send"} 5"#), "{text}");
        assert!(text.contains(r#"pollgate_request_duration_seconds_count{action="sync"} 1"#), "{text}");
        // A series appears once used, not before.
        assert!(!text.contains(r#"action="open""#), "{text}");
    }
}
